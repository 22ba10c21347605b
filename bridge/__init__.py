"""Telephony side of voice-bridge: the AudioSocket protocol, the server, the media clock, the call flow."""
