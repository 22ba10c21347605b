"""Voice side of voice-bridge: cache, TTS and audio conversion. Knows nothing of telephony."""
