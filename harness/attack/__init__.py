"""The hostile client's toolkit: the attacker, ``netharness fuzz`` and ``netharness soak``."""
