# Generated documentation; included by the top-level Makefile (`-include mk/*.mk`).

.PHONY: reference

reference:  ## regenerate docs/reference.md from the API models (after changing them)
	$(PYTHON) tools/gen_reference.py
