"""Helpers several test files share (one copy each): hostile values, small datafiles, recording dispatchers."""
