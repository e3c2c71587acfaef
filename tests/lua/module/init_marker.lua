NIMRANK_INIT_RAN = true -- tests: set NIMRANK_INIT to this file; only the host runs it
