# pelk_mm: `make demo` is the quickstart; `make test` is what CI runs.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test demo

install:
	bash tools/install.sh

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

DEMO_CONFIG := configs/upernet_pelk_t_ade20k_demo.py
DEMO_DIR := work_dirs/demo

# Train UperNet-PeLK-T on a generated small ADE20K, evaluate its mIoU and
# draw its predictions (about 7 minutes on 2 cores once installed).
demo: install
	$(PY) tools/dataset_converters/generate_dataset.py ade20k data/ade_synthetic
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR)
	$(PY) tools/test.py $(DEMO_CONFIG) $(DEMO_DIR)/iter_300.pth \
		--work-dir $(DEMO_DIR)/test --show-dir $(DEMO_DIR)/predictions
	@echo "demo done (mIoU in the last log line above):"
	@echo "  checkpoint   $(DEMO_DIR)/iter_300.pth"
	@echo "  logs         $(DEMO_DIR)/<timestamp>/, $(DEMO_DIR)/test/<timestamp>/"
	@echo "  predictions  $(DEMO_DIR)/predictions/vis_data/vis_image/"
	@echo "               (each input with its ground truth | predicted mask)"
