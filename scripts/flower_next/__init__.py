"""The fast tests and `make simulation` against Flower's newest pre-release (`make flower-next`).

Why: a Flower release may move what the project relies on (docs/flower-upgrades.md). Trying the
next one before it is out says what the upgrade will cost, while the pin stays on the release.

What it does, with the standard library only:

  1. finds the newest pre-release of `flwr-nightly` on PyPI (FLOWER_NEXT=<version> pins one);
  2. builds or refreshes the venv .venv-flower-next: everything of the host's .venv as locked,
     but Flower, which is flwr-nightly. Nothing already in .venv is downloaded again (torch is
     several GB): the new venv sees .venv's site-packages through `host-site-packages/`, one
     symlink per entry there but Flower's own (`flwr/`, `flwr-*.dist-info`), added to sys.path
     after the new venv's own site-packages by a .pth file. What flwr-nightly needs and .venv
     lacks (its Requires-Dist, with the `simulation` extra the project installs) is installed
     into the new venv, and shadows .venv's copy;
  3. says which entries of flowerdock_logging/flower_internals.py the nightly fails;
  4. runs the fast tests (`make test-fast`'s command) with the new venv's python;
  5. runs `make simulation BIN=.venv-flower-next/bin`, with a Flower home and ports of its own,
     so that neither reuses a local SuperLink of the pinned Flower;

and prints a one-line verdict per step; it exits 1 if the tests or the simulation fail, 2 if the
venv cannot be made.

Run it from the checkout's root as `python -m scripts.flower_next`. Its parts:

  common.py        the checkout's root, the distribution tried, running a command, giving up;
  versions.py      PEP 440: the order of versions, pre-releases, specifiers;
  requirements.py  PEP 508: Requires-Dist lines, their markers here, which ones nothing meets;
  pypi.py          which flwr-nightly to try (step 1);
  venv.py          .venv-flower-next: the view of .venv, the nightly and what it lacks (step 2);
  __main__.py      the command: steps 3 to 5 and the verdicts.
"""
