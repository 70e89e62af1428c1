"""Strategy ``prompt``: its settings (:mod:`.config`) and its code (:mod:`.strategy`)."""
