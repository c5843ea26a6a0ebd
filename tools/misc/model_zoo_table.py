"""The model zoo table of configs/README.md, from the model index.

Usage:
    python tools/misc/model_zoo_table.py            # print the table
    python tools/misc/model_zoo_table.py --check configs/README.md

The metafiles (``model-index.yml``) are the one copy of the paper's
numbers and of pelk_mm's own counts of the same models (``Counted
Parameters`` / ``Counted FLOPs``); this prints them as Markdown, and
``--check FILE`` fails (exit 1, saying which row) where FILE's table is not
what the index gives.
"""
import argparse
import os.path as osp
import sys
from typing import List

from modelindex.load_model_index import load

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HEADER = ("| model | task | input | params | FLOPs | paper's result | "
          'counted here | config |\n|---|---|---|---|---|---|---|---|')


def _si(value, unit: str) -> str:
    if value is None:
        return '-'
    scale, suffix = (1e9, 'G') if unit == 'flops' else (1e6, 'M')
    return f'{value / scale:g}{suffix}'


def rows(index_path: str) -> List[str]:
    """One Markdown row per indexed model, in the index's order."""
    index = load(index_path)
    index.build_models_with_collections()
    lines = []
    for model in index.models:
        data = model.metadata.data
        size = str(data.get('Input Size') or data.get('Crop Size') or '-')
        size = size.strip('()').replace(', ', 'x')
        results_list = model.results or []
        tasks = sorted({r.task for r in results_list}) or ['-']
        results = ', '.join(f'{k} {v}' for r in results_list
                            for k, v in r.metrics.items()) or '-'
        counted = '-'
        if data.get('Counted Parameters'):
            counted = (f'{_si(data["Counted Parameters"], "params")} / '
                       f'{_si(data.get("Counted FLOPs"), "flops")}')
        lines.append(f'| {model.name} | {" / ".join(tasks)} | {size} | '
                     f'{_si(data.get("Parameters"), "params")} | '
                     f'{_si(data.get("FLOPs"), "flops")} | {results} | '
                     f'{counted} | '
                     f'[config]({osp.relpath(model.config, "configs")}) |')
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--index', default=osp.join(REPO, 'model-index.yml'))
    parser.add_argument(
        '--check', metavar='FILE', help='fail where FILE\'s table differs')
    args = parser.parse_args()
    table = [HEADER] + rows(args.index)
    if not args.check:
        print('\n'.join(table))
        return 0
    with open(args.check) as f:
        text = f.read()
    missing = [row for row in table if row not in text]
    if missing:
        print(
            f'{args.check}: its model zoo table differs from '
            f'{args.index}; e.g. this row is missing:\n{missing[0]}\n'
            f'Paste the output of python tools/misc/model_zoo_table.py.',
            file=sys.stderr)
        return 1
    print(f'{args.check}: the table is the index\'s ({len(table) - 1} '
          f'models)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
