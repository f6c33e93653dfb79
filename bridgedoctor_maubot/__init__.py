"""maubot plugin for bridgedoctor: `!bridge` commands answered by the privileged host helper."""

from .bot import BridgeDoctorPlugin

__all__ = ["BridgeDoctorPlugin"]
