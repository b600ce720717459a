"""The dashboard under `/app`: server-rendered pages enhanced by a small script (ADR 0021)."""
