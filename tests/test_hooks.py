import re

from test_checkpoint import make_runner


def test_progress_bar_hook_draws_every_iteration(tmp_path, capfd):
    runner = make_runner(tmp_path, max_iters=3,
                         custom_hooks=[dict(type='pelk_mm.ProgressBarHook')])
    runner.train()
    out = capfd.readouterr().out
    assert re.search(r'\] 3/3, [\d.]+ task/s', out)
    assert '1/3' in out and '2/3' in out
