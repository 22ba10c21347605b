"""The LLM side of a call: where answers come from, how they are shaped for speech, and the call's memory.

- `source`: the `TextSource` protocol (what the bridge needs from any LLM), `ChatMessage`, `LLMError`;
- `openai_compat`: `OpenAICompatibleSource`, the shipped `TextSource` (OpenAI-compatible streaming);
- `phrases`: `PhraseGrouper` (pieces -> whole phrases for auto_mode TTS) and `phrases_heard`;
- `answer_stream`: `AnswerStream`, one answer read in the background for several speakers;
- `conversation`: `ConversationManager`, a call's memory with summaries cached via `get_text`/`set_text`.
"""

from voice.llm.answer_stream import AnswerStream, closing_stream
from voice.llm.conversation import KEEP_RECENT, SUMMARY_INSTRUCTION, ConversationManager, Turn
from voice.llm.openai_compat import OpenAICompatibleSource
from voice.llm.phrases import SAFE_CHARS_PER_S, PhraseGrouper, phrases_heard
from voice.llm.source import ChatMessage, LLMError, TextSource

__all__ = [
    "KEEP_RECENT",
    "SAFE_CHARS_PER_S",
    "SUMMARY_INSTRUCTION",
    "AnswerStream",
    "ChatMessage",
    "ConversationManager",
    "LLMError",
    "OpenAICompatibleSource",
    "PhraseGrouper",
    "TextSource",
    "Turn",
    "closing_stream",
    "phrases_heard",
]
