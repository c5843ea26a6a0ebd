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
NVCC = 'echo "Cuda compilation tools, release 13.0"'
LOGIN_ARCHS = '7.5;8.0;8.6;8.9;9.0+PTX'


def stub_venv(tmp_path, gpus=None, nvidia_wheels=False):
    """A venv whose python answers as torch 2.12.1+cu130 would: the GPUs
    it sees (``gpus``: their compute capabilities, e.g. ``'8.0;9.0'``, or
    None for none); ``nvidia_wheels`` lays out the headers and libraries
    torch's CUDA wheels install (``nvidia/cu13/{include,lib}``)."""
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    (venv / 'bin' / 'python').write_text(
        '#!/bin/sh\n'
        'case "$*" in\n'
        f'  *get_device_capability*) echo "{gpus or ""}" ;;\n'
        '  *torch.version.cuda*) echo 13.0 ;;\n'
        '  "-c import torch") ;;\n'
        '  *) exit 1 ;;\n'
        'esac\n')
    (venv / 'bin' / 'python').chmod(0o755)
    if nvidia_wheels:
        cu13 = venv / 'lib' / 'python3.11' / 'site-packages' / 'nvidia' / (
            'cu13')
        (cu13 / 'include').mkdir(parents=True)
        (cu13 / 'include' / 'cusparse.h').write_text('')
        (cu13 / 'lib').mkdir()
    return venv


def without_cuda_home(plan):
    """A printed plan without its CUDA_HOME entry (the stub nvcc's)."""
    return ' '.join(entry for entry in plan.split()
                    if not entry.startswith('CUDA_HOME='))


def build_plan(tmp_path, stubs, gpus=None, nvidia_wheels=False, **env):
    return run_script(
        'install.sh',
        '--mmcv-build-plan',
        path=stub_bin(tmp_path, stubs),
        VENV=str(stub_venv(tmp_path, gpus, nvidia_wheels)),
        **env)


@pytest.mark.parametrize(
    'stubs, gpus, env, plan, why',
    [
        ({}, None, {}, 'FORCE_CUDA=0', 'torch sees no GPU'),
        # This project's own machines: a compiler-only toolkit, no GPU.
        ({
            'nvcc': NVCC
        }, None, {}, 'FORCE_CUDA=0', 'set TORCH_CUDA_ARCH_LIST'),
        ({
            'nvcc': NVCC
        }, '8.0;9.0', {}, 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=8.0;9.0',
         'GPUs torch sees'),
        ({}, '9.0', {}, 'FORCE_CUDA=0', 'no nvcc on PATH'),
        # A login node building for its compute nodes.
        ({
            'nvcc': NVCC
        }, None, {
            'TORCH_CUDA_ARCH_LIST': '8.6'
        }, 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=8.6', 'given'),
        ({
            'nvcc': NVCC
        }, '8.0', {
            'TORCH_CUDA_ARCH_LIST': '9.0'
        }, 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0', 'given'),
        ({
            'nvcc': NVCC
        }, None, {
            'PELK_MM_MMCV_CUDA': '1'
        }, f'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST={LOGIN_ARCHS}',
         'no GPU visible'),
        ({
            'nvcc': NVCC
        }, '9.0', {
            'PELK_MM_MMCV_CUDA': '0'
        }, 'FORCE_CUDA=0', 'PELK_MM_MMCV_CUDA=0'),
    ],
    ids=[
        'no-toolkit', 'nvcc-no-gpu', 'gpu-node', 'gpu-no-toolkit',
        'arch-list-no-gpu', 'arch-list-over-gpus', 'forced-cuda', 'forced-cpu'
    ])
def test_mmcv_build_plan(tmp_path, stubs, gpus, env, plan, why):
    """mmcv's own rule: CUDA ops where torch sees a GPU or where asked
    (TORCH_CUDA_ARCH_LIST, PELK_MM_MMCV_CUDA=1); nvcc alone is not asking."""
    proc = build_plan(tmp_path, stubs, gpus, **env)
    assert proc.returncode == 0, proc.stderr
    assert without_cuda_home(proc.stdout) == plan
    assert why in proc.stderr


def test_mmcv_build_plan_names_a_driver_torch_cannot_use(tmp_path):
    """nvidia-smi lists a GPU that torch does not see (a driver older than
    torch's CUDA): CPU ops, saying why."""
    proc = build_plan(tmp_path, {
        'nvcc': NVCC,
        'nvidia-smi': 'echo "NVIDIA A100-SXM4-80GB"'
    })
    assert proc.stdout.strip() == 'FORCE_CUDA=0'
    assert 'nvidia-smi lists GPUs (NVIDIA A100-SXM4-80GB)' in proc.stderr
    assert 'driver' in proc.stderr and 'CUDA 13.0' in proc.stderr


def test_mmcv_build_plan_before_torch_asks_nvidia_smi(tmp_path):
    venv = tmp_path / 'empty-venv'
    proc = run_script(
        'install.sh',
        '--mmcv-build-plan',
        path=stub_bin(tmp_path, {
            'nvcc': NVCC,
            'nvidia-smi': 'printf "8.0\\n9.0\\n8.0\\n"'
        }),
        VENV=str(venv))
    assert without_cuda_home(
        proc.stdout) == 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=8.0;9.0'


def test_mmcv_cuda_build_gets_torchs_nvidia_headers(tmp_path):
    """A compiler-only toolkit lacks cusparse.h & co., which torch's CUDA
    headers include: the build gets those of torch's nvidia wheels."""
    proc = build_plan(
        tmp_path, {'nvcc': NVCC}, '9.0', nvidia_wheels=True, CPATH='/opt/x')
    cu13 = tmp_path / 'venv/lib/python3.11/site-packages/nvidia/cu13'
    assert proc.stdout.split() == [
        'FORCE_CUDA=1', 'TORCH_CUDA_ARCH_LIST=9.0', f'CUDA_HOME={tmp_path}',
        f'CPATH={cu13}/include:/opt/x', f'LIBRARY_PATH={cu13}/lib'
    ]
    assert "headers of torch's nvidia wheels" in proc.stderr
    # A CPU build leaves the paths alone.
    (tmp_path / 'cpu').mkdir()
    proc = build_plan(tmp_path / 'cpu', {'nvcc': NVCC}, nvidia_wheels=True)
    assert proc.stdout.strip() == 'FORCE_CUDA=0'


def test_mmcv_cuda_build_names_the_toolkit_nvcc_reports(tmp_path):
    """An nvcc on PATH that is a wrapper of the toolkit's (as
    /usr/local/bin/nvcc here): torch would take the folder above it for
    the toolkit; the build is told the toolkit nvcc reports."""
    toolkit = tmp_path / 'cuda-13.0'
    (toolkit / 'bin').mkdir(parents=True)
    nvcc = ('case "$*" in *--dryrun*) echo "#\\$ TOP=' + str(toolkit) +
            '/bin/.." >&2 ;; *) ' + NVCC + ' ;; esac')
    proc = build_plan(tmp_path, {'nvcc': nvcc}, '9.0')
    assert f'CUDA_HOME={toolkit}' in proc.stdout.split()
    # One that is set is the user's.
    (tmp_path / 'set').mkdir()
    proc = build_plan(
        tmp_path / 'set', {'nvcc': nvcc}, '9.0', CUDA_HOME='/opt/cuda')
    assert 'CUDA_HOME' not in proc.stdout


def test_mmcv_build_plan_found_through_cuda_home(tmp_path):
    cuda_home = tmp_path / 'cuda'
    (cuda_home / 'bin').mkdir(parents=True)
    (cuda_home / 'bin' / 'nvcc').write_text(f'#!/bin/sh\n{NVCC}\n')
    (cuda_home / 'bin' / 'nvcc').chmod(0o755)
    proc = build_plan(
        tmp_path, {}, CUDA_HOME=str(cuda_home), TORCH_CUDA_ARCH_LIST='9.0')
    assert proc.stdout.strip() == 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0'
    assert str(cuda_home / 'bin' / 'nvcc') in proc.stderr


@pytest.mark.parametrize('stubs, env, message', [
    ({}, {
        'PELK_MM_MMCV_CUDA': '1'
    }, 'no nvcc on PATH or in $CUDA_HOME/bin'),
    ({}, {
        'TORCH_CUDA_ARCH_LIST': '9.0'
    }, 'no nvcc on PATH or in $CUDA_HOME/bin'),
    ({
        'nvcc': NVCC
    }, {
        'PELK_MM_MMCV_CUDA': 'yes'
    }, 'PELK_MM_MMCV_CUDA must be auto, 0 or 1'),
])
def test_mmcv_build_plan_refuses(tmp_path, stubs, env, message):
    proc = build_plan(tmp_path, stubs, **env)
    assert proc.returncode == 1
    assert message in proc.stderr and proc.stdout == ''
