"""MADEON: a decoder-only recognizer over discrete speech tokens (Masuyama et al., SLT 2024).

Speech becomes k-means units of a frozen encoder's frames (``tokens``), one joint
SentencePiece vocabulary holds speech and text pieces, and one decoder (Mamba, Mamba-2
or a Transformer, ``ssm`` and ``model``) reads the speech pieces, bidirectionally with
speech prefixing, and then writes the text.
"""
