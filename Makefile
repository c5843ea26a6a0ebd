# pelk_mm: `make demo` is the quickstart; `make lint` and `make test` are
# what CI runs; `make format` applies the house style that `make lint` checks.
# The demos train with --force: running one again starts over in its work dir
# (the earlier run's checkpoints are moved into its earlier_run_<time>/).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install lint-tools lint format test test-quick test-matrix demo demo-det demo-cls

install:
	bash tools/install.sh

# The checkers alone (seconds): lint and format need nothing of the stack.
lint-tools:
	bash tools/install.sh --lint-tools

# flake8, isort and yapf in OpenMMLab's style, and mypy on the ops and the
# models (configured in setup.cfg).
CODE := pelk_mm configs tools tests
lint: lint-tools
	$(PY) -m flake8 $(CODE)
	$(PY) -m isort --check-only --diff $(CODE)
	$(PY) -m yapf --recursive --diff $(CODE)
	$(PY) -m mypy pelk_mm/ops pelk_mm/models

format: lint-tools
	$(PY) -m isort $(CODE)
	$(PY) -m yapf --recursive --in-place $(CODE)

# The quick part first (minutes on 2 cores), then the end-to-end one
# (marked slow): a broken basic fails early. Each part ends with its 15
# slowest tests. `make test-quick` is the first part alone. (pytest's exit
# code 5: PYTEST_ARGS selected nothing there.) pytest-xdist runs the tests
# in TEST_WORKERS processes (0: in this one), each with its share of the
# cores; the tests that read one trained model run in one of them.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15
test: test-quick
	$(PYTEST) -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-quick: install
	$(PYTEST) -m "not slow" $(PYTEST_ARGS) || [ $$? -eq 5 ]

# pelk_mm in the environments users have (tools/test_matrix.sh): torch
# 2.1.2 with OpenMMLab's stack, from its wheel and the stock tools, and the
# newest torch on PyPI. Each is a venv of its own, shared by this user's
# clones (~/.cache/pelk_mm/venv-*); mmcv is built once per torch (about 7
# minutes).
test-matrix:
	TEST_WORKERS=$(TEST_WORKERS) bash tools/test_matrix.sh

DEMO_CONFIG := configs/demo/upernet_pelk_t_ade20k_demo.py
DEMO_DIR := work_dirs/demo

# Train UperNet-PeLK-T on a generated small ADE20K, evaluate its mIoU and
# draw its predictions (about 9 minutes on 2 cores once installed).
demo: install
	$(PY) tools/dataset_converters/generate_dataset.py ade20k data/ade_synthetic
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR) --force
	$(PY) tools/test.py $(DEMO_CONFIG) $(DEMO_DIR)/iter_300.pth \
		--work-dir $(DEMO_DIR)/test --show-dir $(DEMO_DIR)/predictions
	$(PY) tools/analysis/plot_curves.py $(DEMO_DIR) --overwrite
	@echo "demo done (mIoU in the last log line above):"
	@echo "  checkpoint   $(DEMO_DIR)/iter_300.pth"
	@echo "  curves       $(DEMO_DIR)/curves.png (loss, lr, validation mIoU)"
	@echo "  logs         $(DEMO_DIR)/<timestamp>/, $(DEMO_DIR)/test/<timestamp>/"
	@echo "  predictions  $(DEMO_DIR)/predictions/vis_data/vis_image/"
	@echo "               (each input with its ground truth | predicted mask)"

DET_CONFIG := configs/demo/cascade_mask_rcnn_pelk_t_coco_demo.py
DET_DIR := work_dirs/demo_det

# The detection counterpart: Cascade Mask R-CNN-PeLK-T on a generated small
# COCO, evaluated with mmdet's CocoMetric, then drawn on one image.
demo-det: install
	$(PY) tools/dataset_converters/generate_dataset.py coco data/coco_synthetic
	$(PY) tools/train.py $(DET_CONFIG) --work-dir $(DET_DIR) --force
	$(PY) tools/image_demo.py data/coco_synthetic/val2017/000000000001.jpg \
		$(DET_CONFIG) $(DET_DIR)/epoch_12.pth --out-file $(DET_DIR)/demo.png \
		--score-thr 0.1 --overwrite
	$(PY) tools/analysis/plot_curves.py $(DET_DIR) --overwrite
	@echo "detection demo done: box/mask AP in the log above,"
	@echo "  checkpoint $(DET_DIR)/epoch_12.pth, drawn image $(DET_DIR)/demo.png,"
	@echo "  curves $(DET_DIR)/curves.png (loss, lr, validation AP)"


CLS_DIR := work_dirs/demo_cls
ERF_IMAGES ?= 50
ERF_SIZE ?= 256

# Classification: the reduced PeLK and a ConvNeXt of the same size trained
# the same way on a generated small ImageNet (top-1 in the logs), then the
# effective receptive field of both (about 10 minutes on 2 cores).
demo-cls: install
	$(PY) tools/dataset_converters/generate_dataset.py imagenet data/imagenet_synthetic
	$(PY) tools/train.py configs/demo/pelk_mini_in1k_demo.py --work-dir $(CLS_DIR)/pelk --force
	$(PY) tools/train.py configs/demo/convnext_mini_in1k_demo.py --work-dir $(CLS_DIR)/convnext --force
	for model in pelk convnext; do \
		$(PY) tools/analysis/plot_curves.py $(CLS_DIR)/$$model --overwrite || exit 1; \
		$(PY) tools/analysis/erf.py configs/demo/$${model}_mini_in1k_demo.py \
			$(CLS_DIR)/$$model/epoch_20.pth --img-dir data/imagenet_synthetic/val \
			--num-images $(ERF_IMAGES) --size $(ERF_SIZE) --out-dir $(CLS_DIR)/erf --overwrite || exit 1; \
	done
	@echo "classification demo done: top-1 in the logs above, ERF maps and"
	@echo "  area ratios in $(CLS_DIR)/erf/, curves in $(CLS_DIR)/{pelk,convnext}/curves.png"
