"""Strategy ``lora``: its settings (:mod:`.config`) and its code (:mod:`.strategy`)."""
