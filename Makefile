# Two entry points on a fresh machine with python3: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TSNCTL := $(BIN)/tsnctl
DEMO := demo

.PHONY: demo test lint docs clean-demo

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The whole lifecycle on CPU: render a synthetic 6-class dataset, extract frames, train ResNet-18 TSN,
# test with TenCrop, export to ONNX, and predict a clip with both the checkpoint and the ONNX model.
demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(TSNCTL) demo-data $(DEMO)/data --train-per-class 60 --val-per-class 10
	$(TSNCTL) extract-frames $(DEMO)/data/train_videos.txt $(DEMO)/frames --workers 2
	$(TSNCTL) extract-frames $(DEMO)/data/val_videos.txt $(DEMO)/frames --workers 2
	$(TSNCTL) train -c configs/demo.yaml --output $(DEMO)/run --validate
	$(TSNCTL) test -c configs/demo.yaml -w $(DEMO)/run/best.pt --save-scores $(DEMO)/run/scores.csv \
		--metrics-json $(DEMO)/run/test_metrics.json
	$(TSNCTL) export -w $(DEMO)/run/best.pt -o $(DEMO)/run/model.onnx
	$(TSNCTL) predict $(DEMO)/data/videos/expanding_rings/val_000.mp4 -w $(DEMO)/run/best.pt --topk 3
	$(TSNCTL) predict $(DEMO)/data/videos/expanding_rings/val_000.mp4 -m $(DEMO)/run/model.onnx --topk 3
	@$(BIN)/python -c "import json; m = json.load(open('$(DEMO)/run/test_metrics.json')); \
		print(f\"demo test top-1: {m['top1']:.1f}% ({m['videos']} videos, {m['protocol']})\")"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# ruff, then the layer contracts of pyproject.toml (import-linter; tests/test_architecture.py runs them too).
lint: $(VENV)/.installed
	$(BIN)/ruff check tsnctl tests
	$(BIN)/lint-imports

# Regenerate docs/commands/*.md and docs/config.md from the code (a test fails when they are stale).
docs: $(VENV)/.installed
	$(BIN)/python -m tsnctl.cli.docgen docs

clean-demo:
	rm -rf $(DEMO)
