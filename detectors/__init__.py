"""EDGE — the only code that ever touches audio.

Turns a microphone signal, in memory, into two separated outputs: level frames for
the smart broker and security events for the safe broker. Audio is never written,
streamed or kept beyond a bounded ring buffer.
"""
