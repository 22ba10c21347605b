"""Tools that stand in for services: the ElevenLabs and LLM emulators, a private Redis.

Never imported by production code.
"""
