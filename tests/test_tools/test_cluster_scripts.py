"""The shell entry points for clusters and installs, run with stubs for the
programs they call (srun, nvcc, nvidia-smi): what they would run is
recorded, not run."""
import os
import os.path as osp
import shutil
import subprocess

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def stub_bin(tmp_path, stubs):
    """A PATH holding only the basic tools the scripts use and ``stubs``
    (name -> shell body), so that no real nvcc or srun is found."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for tool in ('bash', 'sh', 'dirname', 'date', 'sort', 'paste', 'cat',
                 'env', 'tr'):
        os.symlink(shutil.which(tool), bin_dir / tool)
    for name, body in stubs.items():
        (bin_dir / name).write_text(f'#!/bin/sh\n{body}\n')
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def run_script(script, *args, path, **env):
    return subprocess.run(
        ['bash', osp.join(REPO, 'tools', script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(PATH=path, HOME=os.environ['HOME'], **env))


# ------------------------------------------------------------- slurm
@pytest.fixture
def srun(tmp_path):
    """``srun(script, *args, **env)``: run a Slurm script of tools/ with
    ``PYTHON=python`` against a stub ``srun`` that records its arguments,
    one per line, and PYTHONPATH; returns what srun got. ``srun.path`` is
    the PATH with the stub."""
    record = tmp_path / 'srun.args'
    path = stub_bin(
        tmp_path, {
            'srun':
            f'printf "%s\\n" "$@" > {record}; '
            f'echo "PYTHONPATH=$PYTHONPATH" >> {record}'
        })

    def launch(script, *args, **env):
        proc = run_script(script, *args, path=path, PYTHON='python', **env)
        assert proc.returncode == 0, proc.stderr
        return record.read_text().splitlines()

    launch.path = path
    return launch


def test_slurm_train_runs_train_py_on_every_task(srun):
    args = srun(
        'slurm_train.sh',
        'gpu-part',
        'pelk-t',
        'configs/upernet_pelk_t_ade20k.py',
        'work_dirs/pelk_t',
        '--amp',
        GPUS='16',
        SRUN_ARGS='--quotatype=auto --time=1-00:00:00')
    assert args[:7] == [
        '--partition=gpu-part', '--job-name=pelk-t', '--gres=gpu:8',
        '--ntasks=16', '--ntasks-per-node=8', '--cpus-per-task=5',
        '--kill-on-bad-exit=1'
    ]
    assert args[7:9] == ['--quotatype=auto', '--time=1-00:00:00']
    assert args[9:-1] == [
        'python', '-u',
        osp.join(REPO, 'tools',
                 'train.py'), 'configs/upernet_pelk_t_ade20k.py', '--work-dir',
        'work_dirs/pelk_t', '--amp', '--launcher', 'slurm'
    ]
    assert args[-1].startswith(f'PYTHONPATH={REPO}:')


def test_slurm_train_work_dir_is_optional_and_few_gpus_fit_one_node(srun):
    args = srun(
        'slurm_train.sh',
        'p',
        'j',
        'configs/pelk_t_in1k.py',
        '--cfg-options',
        'train_cfg.max_epochs=1',
        GPUS='2',
        CPUS_PER_TASK='8')
    assert '--gres=gpu:2' in args and '--ntasks-per-node=2' in args
    assert '--cpus-per-task=8' in args
    assert '--work-dir' not in args
    assert args[args.index('configs/pelk_t_in1k.py'):-1] == [
        'configs/pelk_t_in1k.py', '--cfg-options', 'train_cfg.max_epochs=1',
        '--launcher', 'slurm'
    ]


def test_slurm_test_runs_test_py(srun):
    args = srun('slurm_test.sh', 'p', 'j',
                'configs/cascade_mask_rcnn_pelk_t_coco.py', 'model.pth',
                '--work-dir', 'out')
    assert '--ntasks=8' in args
    assert args[args.index(osp.join(REPO, 'tools', 'test.py')):-1] == [
        osp.join(REPO, 'tools',
                 'test.py'), 'configs/cascade_mask_rcnn_pelk_t_coco.py',
        'model.pth', '--work-dir', 'out', '--launcher', 'slurm'
    ]


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_scripts_say_how_to_call_them(srun, script):
    proc = run_script(script, 'p', 'j', path=srun.path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f'usage: [GPUS=N] bash tools/{script} '
                                  f'PARTITION JOB_NAME CONFIG')


# ------------------------------------------------------- install plan
NVCC = 'echo "Cuda compilation tools, release 12.8"'


@pytest.mark.parametrize(
    'stubs, env, plan, why',
    [
        ({}, {}, 'FORCE_CUDA=0', 'no nvcc'),
        ({
            'nvcc': NVCC,
            'nvidia-smi': 'printf "8.0\\n9.0\\n8.0\\n"'
        }, {}, 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=8.0;9.0', 'visible GPUs'),
        # A login node: the toolkit, no GPU.
        ({
            'nvcc': NVCC
        }, {}, 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=7.5;8.0;8.6;8.9;9.0+PTX',
         'no GPU visible'),
        ({
            'nvcc': NVCC,
            'nvidia-smi': 'echo 8.0'
        }, {
            'TORCH_CUDA_ARCH_LIST': '8.6'
        }, 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=8.6', 'given'),
        ({
            'nvcc': NVCC
        }, {
            'PELK_MM_MMCV_CUDA': '0'
        }, 'FORCE_CUDA=0', 'PELK_MM_MMCV_CUDA=0'),
    ],
    ids=['cpu', 'gpu-node', 'login-node', 'arch-override', 'forced-cpu'])
def test_mmcv_build_plan(tmp_path, stubs, env, plan, why):
    """What mmcv is built with: CUDA ops wherever a CUDA toolkit is, for the
    GPUs seen, the archs given, or common ones."""
    proc = run_script(
        'install.sh',
        '--mmcv-build-plan',
        path=stub_bin(tmp_path, stubs),
        **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == plan
    assert why in proc.stderr


def test_mmcv_build_plan_found_through_cuda_home(tmp_path):
    cuda_home = tmp_path / 'cuda'
    (cuda_home / 'bin').mkdir(parents=True)
    (cuda_home / 'bin' / 'nvcc').write_text(f'#!/bin/sh\n{NVCC}\n')
    (cuda_home / 'bin' / 'nvcc').chmod(0o755)
    proc = run_script(
        'install.sh',
        '--mmcv-build-plan',
        path=stub_bin(tmp_path, {}),
        CUDA_HOME=str(cuda_home),
        TORCH_CUDA_ARCH_LIST='9.0')
    assert proc.stdout.strip() == 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0'
    assert str(cuda_home / 'bin' / 'nvcc') in proc.stderr


@pytest.mark.parametrize('value, message', [
    ('1', 'PELK_MM_MMCV_CUDA=1 but no nvcc'),
    ('yes', 'PELK_MM_MMCV_CUDA must be auto, 0 or 1'),
])
def test_mmcv_build_plan_refuses(tmp_path, value, message):
    proc = run_script(
        'install.sh',
        '--mmcv-build-plan',
        path=stub_bin(tmp_path, {}),
        PELK_MM_MMCV_CUDA=value)
    assert proc.returncode == 1
    assert message in proc.stderr and proc.stdout == ''
