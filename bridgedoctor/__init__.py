"""bridgedoctor: evidence-based diagnosis of mautrix bridges deployed with MDAD."""

__version__ = "0.1.0"
