"""MADEON's sequence mixers: Mamba's selective SSM and Mamba-2's SSD, in plain PyTorch.

Both mixers map ``(B, L, d_model) -> (B, L, d_model)`` causally through a linear
recurrence over a hidden state, discretised with a per-step, input-dependent step size
``dt > 0`` and a learned decay rate ``A < 0`` (``A = -exp(A_log)``):
``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t . h_t + D x_t``.

- :class:`Mamba` (Gu & Dao 2023): every inner channel has its own ``A`` row over
  ``d_state`` states, so the state is ``(B, d_state, d_inner)`` and no step can be written
  as a matrix product. :func:`selective_scan` therefore stays a recurrence, run in
  *chunks*: the sequence is cut into chunks, all chunks advance together one position at
  a time from a zero state, then the states are carried from chunk to chunk and each
  chunk adds its carried-in state's decayed contribution. Python loops ``L_c + L / L_c``
  times instead of ``L``. On a CPU a step's state wider than a cache's share
  (``_STEP_BUDGET`` values) gains nothing from more chunks, so wide batches use fewer,
  longer chunks; at ``B = 8, d_model = 256`` that is one chunk, the plain recurrence.
- :class:`Mamba2` (Dao & Gu 2024): ``A`` is one scalar per head, so inside a chunk the
  recurrence is a masked matrix product (:func:`ssd`): ``y = (C B^T * L) x`` with the
  decay matrix ``L[t, s] = exp(sum_{s<k<=t} dt_k A)``, and only one state per chunk is
  carried by a loop over chunks.

Decays are exponentiated only as ``exp(non-positive)``: sums of ``dt A`` inside a chunk
and their differences, never the inverse of a cumulative product, which overflows.

Decoding: ``forward(x, state, return_state=True)`` runs a prefix (or any continuation) in
parallel and returns the state; ``step(x_t, state)`` then advances one token. A state is
a plain tuple ``(conv, ssm)`` of batch-first tensors (reorder hypotheses by indexing
each): ``conv`` holds the last ``d_conv - 1`` inputs of the causal convolution, ``ssm``
the recurrence's state. ``initial_state`` gives the zero state, the same as ``None``.

Parameters are laid out as in ``mamba_ssm`` (``Mamba`` and ``Mamba2`` modules), so weights
load either way; on CUDA with ``mamba_ssm`` installed its fused kernels run the scan.
Parameters that should not be weight-decayed carry ``_no_weight_decay = True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

try:  # mamba-ssm's fused CUDA/Triton kernels, on GPU machines where it is installed
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
except Exception:  # noqa: BLE001 - a build for another torch or CUDA fails in several ways
    selective_scan_fn = mamba_chunk_scan_combined = None

State = tuple[torch.Tensor, torch.Tensor]  # (conv window, SSM state), batch first
# Mamba's chunks: at most this many values in one step of all chunks (B * chunks * N * d_inner;
# 256 KB of float32). Chunks only save Python's per-step overhead, and a wider step spills
# out of cache. Forward + backward, L = 300, 2 threads: B N d_inner = 8K: 47 ms in 1 chunk,
# 21 ms in 19; 16K: 77 / 54 ms (5); 32K: 83-100 ms whatever the count; 64K: 147 ms in 1 chunk,
# 204 in 2, 342 in 5.
_STEP_BUDGET = 1 << 16


@dataclass(frozen=True)
class MambaConfig:
    """Mamba's mixer; ``Mamba(d_model, **fields)`` builds one."""

    d_model: int
    d_state: int = 16  # states per inner channel (N)
    d_conv: int = 4  # causal depthwise convolution width, in steps
    expand: int = 2  # d_inner = expand * d_model
    dt_rank: int | str = "auto"  # dt's low-rank bottleneck; "auto": ceil(d_model / 16)
    chunk: int = 64  # shortest chunk of the scan, in steps (see _STEP_BUDGET)
    dt_min: float = 0.001  # dt starts log-uniform in [dt_min, dt_max]
    dt_max: float = 0.1
    fused: bool = True  # mamba_ssm's kernel on CUDA when installed; False: always PyTorch

    def __post_init__(self) -> None:
        _positive(self, "d_model", "d_state", "d_conv", "expand", "chunk")
        if self.dt_rank != "auto" and not (isinstance(self.dt_rank, int) and self.dt_rank > 0):
            raise ValueError(f"dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        _dt_range(self.dt_min, self.dt_max)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)


@dataclass(frozen=True)
class Mamba2Config:
    """Mamba-2's mixer; ``Mamba2(d_model, **fields)`` builds one."""

    d_model: int
    d_state: int = 64  # states per head channel (N)
    d_conv: int = 4  # causal depthwise convolution width, in steps
    expand: int = 2  # d_inner = expand * d_model = nheads * headdim
    headdim: int = 32  # channels per head (P); each head has one decay rate A
    ngroups: int = 1  # B and C are shared by nheads / ngroups heads
    chunk: int = 64  # SSD chunk, in steps
    dt_min: float = 0.001  # dt starts log-uniform in [dt_min, dt_max]
    dt_max: float = 0.1
    a_init: tuple[float, float] = (1.0, 16.0)  # -A starts uniform in this range
    fused: bool = True  # mamba_ssm's kernel on CUDA when installed; False: always PyTorch

    def __post_init__(self) -> None:
        _positive(self, "d_model", "d_state", "d_conv", "expand", "headdim", "ngroups", "chunk")
        _dt_range(self.dt_min, self.dt_max)
        if self.d_inner % self.headdim:
            raise ValueError(f"headdim ({self.headdim}) must divide d_inner ({self.d_inner})")
        if self.nheads % self.ngroups:
            raise ValueError(f"ngroups ({self.ngroups}) must divide nheads ({self.nheads})")
        if not 0 < self.a_init[0] <= self.a_init[1]:
            raise ValueError(f"a_init must be (low, high) with 0 < low <= high, got {self.a_init}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim


def _positive(cfg: object, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")


def _dt_range(dt_min: float, dt_max: float) -> None:
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min} and {dt_max}")


def _dt_bias(n: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """``(n,)`` biases whose softplus is log-uniform in [dt_min, dt_max] (Mamba's init)."""
    dt = torch.exp(torch.empty(n).uniform_(math.log(dt_min), math.log(dt_max))).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^-1(dt)


def _no_decay(*params: nn.Parameter) -> None:
    for p in params:
        p._no_weight_decay = True  # read by the optimizer set-up, as in mamba_ssm


def causal_conv(x: torch.Tensor, conv: nn.Conv1d, window: torch.Tensor) -> State:
    """SiLU of the depthwise causal convolution of ``x`` (B, L, C) that continues after
    ``window`` (B, C, K-1), the previous inputs -> (B, L, C) and the new window."""
    k = conv.kernel_size[0]
    xc = torch.cat([window, x.transpose(1, 2)], -1)  # (B, C, K-1+L)
    y = F.conv1d(xc, conv.weight, conv.bias, groups=conv.groups)  # (B, C, L)
    return F.silu(y).transpose(1, 2), xc[..., xc.shape[-1] - (k - 1) :]


def conv_step(x: torch.Tensor, conv: nn.Conv1d, window: torch.Tensor) -> State:
    """:func:`causal_conv` for one step: ``x`` (B, C) -> (B, C) and the new window."""
    xc = torch.cat([window, x[..., None]], -1)  # (B, C, K)
    y = (xc * conv.weight[:, 0]).sum(-1) + conv.bias  # (B, C)
    return F.silu(y), xc[..., 1:]


def _fused_selective_scan(x, dt, A, B, C, D, z) -> tuple[torch.Tensor, torch.Tensor]:
    """mamba_ssm's CUDA selective scan on (b, l, .) tensors; it adds ``D x`` and gates by
    ``silu(z)`` itself, and takes no initial state. -> ``y`` (b, l, d), state (b, n, d)."""
    x, dt, B, C, z = (t.transpose(1, 2).contiguous() for t in (x, dt, B, C, z))
    y, h = selective_scan_fn(x, dt, A, B, C, D.float(), z, return_last_state=True)
    return y.transpose(1, 2), h.transpose(1, 2)


def selective_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    h0: torch.Tensor | None = None, chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Mamba's recurrence ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t``, ``y_t = C_t . h_t``
    per channel: ``x``, ``dt`` (b, l, d), ``A`` (d, n) <= 0, ``B``, ``C`` (b, l, n), ``h0``
    (b, n, d) or None (zeros) -> ``y`` (b, l, d) and the final state (b, n, d)."""
    b, l, d = x.shape
    At = A.T  # (n, d): d last, the axis that vectorizes
    T = min(chunk, l)
    pad, c = -l % T, -(-l // T)
    # dt = 0 on the padding: no decay and no input, so the final state is the last real one
    x, dt, B, C = (
        F.pad(v, (0, 0, 0, pad)).view(b, c, T, -1).transpose(1, 2) for v in (x, dt, B, C)
    )
    # 1. every chunk from its own start, one position at a time; chunk 0 starts from h0
    h = x.new_zeros(b, c, A.shape[1], d)  # (b, c, n, d)
    if h0 is not None:
        h = torch.cat([h0[:, None], h[:, 1:]], 1)
    ys = []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        h = torch.exp(dt_t[:, :, None] * At) * h + B_t[..., None] * (dt_t * x_t)[:, :, None]
        ys.append((C_t[:, :, None] @ h)[:, :, 0])  # (b, c, d)
    y = torch.stack(ys, 2)  # (b, c, T, d)
    # 2. carry the states across chunks: chunk k + 1 enters with H_k
    cum = dt.cumsum(1).transpose(1, 2)  # (b, c, T, d): time since the chunk's start
    H, entering = h[:, 0], []
    for k in range(1, c):
        entering.append(H)
        H = torch.exp(cum[:, k, -1, None] * At) * H + h[:, k]  # (b, n, d)
    if entering:  # 3. the carried-in state's share: C_t . (exp(A cum_t) H), exponent <= 0
        decayed = torch.exp(cum[:, 1:, :, None] * At) * torch.stack(entering, 1)[:, :, None]
        late = (C.transpose(1, 2)[:, 1:, :, None] @ decayed)[..., 0, :]  # (b, c-1, T, d)
        y = torch.cat([y[:, :1], y[:, 1:] + late], 1)
    return y.reshape(b, c * T, d)[:, :l], H


def ssd(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    h0: torch.Tensor | None = None, chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Mamba-2's recurrence ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T``, ``y_t = h_t C_t``
    per head, by chunks: ``x`` (b, l, h, p), ``dt`` (b, l, h), ``A`` (h,) <= 0, ``B``, ``C``
    (b, l, g, n), ``h0`` (b, h, p, n) or None -> ``y`` (b, l, h, p), final state (b, h, p, n)."""
    b, l, h, p = x.shape
    T = min(chunk, l)
    pad, c = -l % T, -(-l // T)
    B, C = (v.repeat_interleave(h // v.shape[2], dim=2) for v in (B, C))  # (b, l, h, n)
    # dt = 0 on the padding: no decay and no input, so the final state is the last real one
    x, B, C = (
        F.pad(v, (0, 0, 0, 0, 0, pad)).view(b, c, T, h, -1) for v in (x * dt[..., None], B, C)
    )
    cum = F.pad(dt * A, (0, 0, 0, pad)).view(b, c, T, h).transpose(2, 3).cumsum(-1)
    # cum (b, c, h, T): the log-decay since the chunk's start, <= 0
    # 1. inside each chunk: y_t = sum_{s<=t} (C_t . B_s) exp(cum_t - cum_s) dt_s x_s
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    seg = (cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, float("-inf"))
    scores = torch.einsum("bcthn,bcshn->bchts", C, B) * torch.exp(seg)  # (b, c, h, T, T)
    y = torch.einsum("bchts,bcshp->bcthp", scores, x)  # (b, c, T, h, p)
    # 2. each chunk's own inputs, decayed to its end: its share of the state it passes on
    to_end = torch.exp(cum[..., -1:] - cum).transpose(2, 3)[..., None]  # (b, c, T, h, 1)
    states = torch.einsum("bcshn,bcshp->bchpn", B * to_end, x)  # (b, c, h, p, n)
    # 3. carry the states across chunks
    H, entering = (h0 if h0 is not None else x.new_zeros(b, h, p, B.shape[-1])), []
    for k in range(c):
        entering.append(H)
        H = torch.exp(cum[:, k, :, -1, None, None]) * H + states[:, k]  # (b, h, p, n)
    # 4. the carried-in state's share: exp(cum_t) H C_t
    late = torch.einsum("bcthn,bchpn->bcthp", C, torch.stack(entering, 1))
    y = y + late * torch.exp(cum).transpose(2, 3)[..., None]
    return y.reshape(b, c * T, h, p)[:, :l], H


class Mamba(nn.Module):
    """Mamba's mixer: ``x, z = in_proj(u)``; ``x = silu(conv(x))``; ``dt, B, C`` from ``x``;
    ``y = scan(x) + D x``, gated by ``silu(z)``; ``out_proj(y)``. ``(B, L, d_model)`` in/out."""

    def __init__(self, d_model: int, **options: Any) -> None:
        super().__init__()
        cfg = self.config = MambaConfig(d_model, **options)
        di, n, r = cfg.d_inner, cfg.d_state, cfg.rank
        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)  # -> x, z
        self.conv1d = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)  # -> dt (low rank), B, C
        self.dt_proj = nn.Linear(r, di)
        nn.init.uniform_(self.dt_proj.weight, -(r**-0.5), r**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(_dt_bias(di, cfg.dt_min, cfg.dt_max))
        self.dt_proj.bias._no_reinit = True  # a model-wide init must keep the dt range
        # S4D-real: state k of every channel decays at rate k + 1
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1.0)).repeat(di, 1))  # (di, n)
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d_model, bias=False)
        _no_decay(self.A_log, self.D)
        self._dt_b_c = [r, n, n]

    def initial_state(self, batch: int, device=None, dtype=None) -> State:
        cfg = self.config
        conv = torch.zeros(batch, cfg.d_inner, cfg.d_conv - 1, device=device, dtype=dtype)
        return conv, torch.zeros(batch, cfg.d_state, cfg.d_inner, device=device, dtype=dtype)

    def forward(self, u: torch.Tensor, state: State | None = None, return_state: bool = False):
        """``u`` (B, L, d_model) after ``state`` (None: the start) -> (B, L, d_model), and
        with ``return_state`` the state after the last step."""
        conv, h0 = state if state is not None else self.initial_state(len(u), u.device, u.dtype)
        x, z = self.in_proj(u).chunk(2, -1)  # (B, L, di) each
        x, conv = causal_conv(x, self.conv1d, conv)
        dt, B, C = self.x_proj(x).split(self._dt_b_c, -1)
        dt = F.softplus(self.dt_proj(dt))  # (B, L, di), step sizes > 0
        A = -torch.exp(self.A_log)  # (di, n)
        if self.config.fused and state is None and u.is_cuda and selective_scan_fn is not None:
            y, h = _fused_selective_scan(x, dt, A, B, C, self.D, z)
        else:
            y, h = selective_scan(x, dt, A, B, C, h0, self._chunk(x))
            y = (y + x * self.D) * F.silu(z)  # (B, L, di)
        out = self.out_proj(y)
        return (out, (conv, h)) if return_state else out

    def step(self, u: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step: ``u`` (B, d_model) after ``state`` -> (B, d_model), the new state."""
        conv, h = state
        x, z = self.in_proj(u).chunk(2, -1)  # (B, di) each
        x, conv = conv_step(x, self.conv1d, conv)
        dt, B, C = self.x_proj(x).split(self._dt_b_c, -1)
        dt = F.softplus(self.dt_proj(dt))  # (B, di)
        A = -torch.exp(self.A_log.T)  # (n, di)
        h = torch.exp(dt[:, None] * A) * h + B[..., None] * (dt * x)[:, None]  # (B, n, di)
        y = (C[:, None] @ h)[:, 0] + x * self.D  # (B, di)
        return self.out_proj(y * F.silu(z)), (conv, h)

    def _chunk(self, x: torch.Tensor) -> int:
        """The scan's chunk: ``config.chunk``, or longer where one step of all chunks would
        exceed ``_STEP_BUDGET`` values."""
        b, l, di = x.shape
        chunks = max(1, _STEP_BUDGET // (b * di * self.config.d_state))
        return max(self.config.chunk, -(-l // chunks))


class GatedRMSNorm(nn.Module):
    """Mamba-2's output norm: RMSNorm of ``y * silu(z)`` within each of ``groups`` equal
    slices of the channels, times a learned scale (``mamba_ssm``'s ``RMSNormGated``)."""

    def __init__(self, dim: int, groups: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = (y * F.silu(z)).unflatten(-1, (self.groups, -1))  # (..., G, dim / G)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.flatten(-2) * self.weight


class Mamba2(nn.Module):
    """Mamba-2's mixer: ``z, xBC, dt = in_proj(u)``; ``x, B, C = silu(conv(xBC))``;
    ``y = ssd(x) + D x`` per head; ``out_proj(norm(y * silu(z)))``. (B, L, d_model) in/out."""

    def __init__(self, d_model: int, **options: Any) -> None:
        super().__init__()
        cfg = self.config = Mamba2Config(d_model, **options)
        di, gn, nh = cfg.d_inner, cfg.ngroups * cfg.d_state, cfg.nheads
        self._split = [di, di + 2 * gn, nh]  # in_proj -> z, xBC, dt
        self._xbc = [di, gn, gn]
        self.in_proj = nn.Linear(d_model, sum(self._split), bias=False)
        self.conv1d = nn.Conv1d(di + 2 * gn, di + 2 * gn, cfg.d_conv, groups=di + 2 * gn,
                                padding=cfg.d_conv - 1)  # fmt: skip
        self.dt_bias = nn.Parameter(_dt_bias(nh, cfg.dt_min, cfg.dt_max))
        self.A_log = nn.Parameter(torch.log(torch.empty(nh).uniform_(*cfg.a_init)))  # (nh,)
        self.D = nn.Parameter(torch.ones(nh))
        self.norm = GatedRMSNorm(di, cfg.ngroups)
        self.out_proj = nn.Linear(di, d_model, bias=False)
        _no_decay(self.dt_bias, self.A_log, self.D)

    def initial_state(self, batch: int, device=None, dtype=None) -> State:
        cfg = self.config
        width = cfg.d_inner + 2 * cfg.ngroups * cfg.d_state
        conv = torch.zeros(batch, width, cfg.d_conv - 1, device=device, dtype=dtype)
        shape = (batch, cfg.nheads, cfg.headdim, cfg.d_state)
        return conv, torch.zeros(shape, device=device, dtype=dtype)

    def _heads(self, xbc: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(..., di + 2 G N)`` -> x (..., H, P), B and C (..., G, N)."""
        cfg = self.config
        x, B, C = xbc.split(self._xbc, -1)
        return x.unflatten(-1, (cfg.nheads, -1)), *(
            v.unflatten(-1, (cfg.ngroups, -1)) for v in (B, C)
        )

    def forward(self, u: torch.Tensor, state: State | None = None, return_state: bool = False):
        """``u`` (B, L, d_model) after ``state`` (None: the start) -> (B, L, d_model), and
        with ``return_state`` the state after the last step."""
        conv, h0 = state if state is not None else self.initial_state(len(u), u.device, u.dtype)
        z, xbc, dt = self.in_proj(u).split(self._split, -1)
        xbc, conv = causal_conv(xbc, self.conv1d, conv)
        x, B, C = self._heads(xbc)  # (B, L, H, P), (B, L, G, N) x 2
        dt = F.softplus(dt + self.dt_bias)  # (B, L, H), step sizes > 0
        A = -torch.exp(self.A_log)  # (H,)
        if self.config.fused and u.is_cuda and mamba_chunk_scan_combined is not None:
            y, h = mamba_chunk_scan_combined(x, dt, A, B, C, self.config.chunk, D=self.D,
                                             initial_states=h0, return_final_states=True)  # fmt: skip
        else:
            y, h = ssd(x, dt, A, B, C, h0, self.config.chunk)
            y = y + x * self.D[:, None]  # (B, L, H, P)
        out = self.out_proj(self.norm(y.flatten(-2), z))
        return (out, (conv, h)) if return_state else out

    def step(self, u: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step: ``u`` (B, d_model) after ``state`` -> (B, d_model), the new state."""
        conv, h = state
        z, xbc, dt = self.in_proj(u).split(self._split, -1)
        xbc, conv = conv_step(xbc, self.conv1d, conv)
        x, B, C = self._heads(xbc)  # (B, H, P), (B, G, N) x 2
        B, C = (v.repeat_interleave(self.config.nheads // self.config.ngroups, 1) for v in (B, C))
        dt = F.softplus(dt + self.dt_bias)  # (B, H)
        decay = torch.exp(dt * -torch.exp(self.A_log))[..., None, None]  # (B, H, 1, 1)
        h = decay * h + (dt[..., None] * x)[..., None] * B[:, :, None]  # (B, H, P, N)
        y = (h @ C[..., None])[..., 0] + x * self.D[:, None]  # (B, H, P)
        return self.out_proj(self.norm(y.flatten(-2), z)), (conv, h)
