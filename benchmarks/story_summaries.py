"""Write the shipped summary of the story library's stimulus features (``sk_braintune/data``).

``make_story_dataset(stories="library", minutes=...)`` builds its brain over all 34 stories
(semantic axes from the MiniLM embeddings of every story, voxel weights scaled over every
story's features), but keeps only the first training stories. With a summary of every story's
stimulus features at hand it synthesises and embeds only the stories it keeps; the package
ships the summary of the demo's dataset settings (``DemoSettings().dataset``), so the demo's
first run skips the other stories (about 4 minutes on a fresh 2-core machine).

This script builds the whole library with those settings in a fresh cache folder (``--cache``
reuses one: its per-story speech and embeddings are read, not recomputed), which writes the
summary, then copies it into ``sk_braintune/data/story_summaries``. ``--check`` writes nothing
into the package: it compares the arrays of the fresh summary with the shipped ones and exits
with status 1 when they differ (another espeak-ng, MiniLM or BLAS build rounds differently;
the dataset then builds every story, as before, and gives that machine's numbers).

Usage::

    python benchmarks/story_summaries.py [--check] [--cache DIR]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None,
                        help="cache folder to build in (default: a fresh temporary one)")
    parser.add_argument("--check", action="store_true",
                        help="compare with the shipped summary instead of replacing it")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="story_summaries.")
    os.environ["SK_BRAINTUNE_CACHE"] = args.cache or scratch
    try:
        return run(args.check)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(check):
    import numpy as np

    from sk_braintune._utils import cache_dir
    from sk_braintune.builtin import make_story_dataset
    from sk_braintune.builtin import story
    from sk_braintune.commands.settings import DemoSettings

    settings = {k: v for k, v in DemoSettings().dataset.items() if v is not None}
    settings.pop("minutes", None)  # the whole collection: it writes the summary
    start = time.perf_counter()
    for path in cache_dir("datasets").glob("story_*.pkl"):
        path.unlink()  # a cached dataset would skip the build that writes the summary
    make_story_dataset(verbose=True, **settings)
    built = time.perf_counter() - start
    written = sorted(cache_dir("datasets", "summaries").glob("*.npz"),
                     key=lambda p: p.stat().st_mtime)[-1]
    target = story.SHIPPED_SUMMARIES / written.name
    print(f"summary {written.name} of {settings} built in {built:.0f} s")
    if not check:
        target.parent.mkdir(parents=True, exist_ok=True)
        for old in target.parent.glob("*.npz"):
            old.unlink()  # one shipped summary: the demo's
        shutil.copyfile(written, target)
        print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")
        return 0
    if not target.is_file():
        print(f"no shipped summary {target.name}: the settings or the texts changed")
        return 1
    with np.load(written) as fresh, np.load(target) as shipped:
        same = set(fresh) == set(shipped) and all(
            np.array_equal(fresh[k], shipped[k]) for k in fresh)
    print(f"shipped summary {target.name}: {'reproduced' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
