"""IETF moq-transport (MOQT): the sans-IO wire codec, draft-14 first (issue #13)."""
