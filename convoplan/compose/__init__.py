"""Composing a bot response: the composition loop, the NLU it reads users with, and sentence fusion."""
