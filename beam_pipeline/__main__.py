"""`python -m beam_pipeline [flags]`: the main job (see beam_pipeline/options.py for flags)."""
import logging
import signal
import sys
import threading

from beam_pipeline import options
from beam_pipeline import pipeline


def configure_logging() -> None:
  """INFO lines of our own loggers (progress, summary) on stderr; Beam, absl and TF at WARNING.

  force=True: importing TF/absl has already given the root logger a WARNING-level handler,
  which would otherwise turn basicConfig into a no-op and hide the progress lines.
  """
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      force=True)
  for noisy in ("apache_beam", "absl", "tensorflow"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def stop_on_sigterm() -> None:
  """SIGTERM (a scheduler's kill, `timeout`) unwinds like Ctrl-C: the job removes its staging
  directory and releases its lock instead of leaving them for --break_lock."""
  def handler(signum, frame):
    del frame
    raise SystemExit(128 + signum)
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, handler)


def main(argv=None) -> int:
  configure_logging()
  stop_on_sigterm()
  argv = sys.argv[1:] if argv is None else argv
  if "-h" in argv or "--help" in argv:
    print(options.help_parser().format_help())
    return 0
  if "--help_beam" in argv:
    print(options.beam_parser().format_help())
    return 0
  try:
    manifest = pipeline.run(argv)
  except pipeline.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print()
  print(pipeline.summary_table(manifest))
  counters = manifest["counters"]
  print(f"\ndocuments read: {counters.get('sources/documents_read', 0)}, dead letters: "
        f"{counters.get('sources/dead_letters', 0)}, examples: {counters.get('runs/examples', 0)}, "
        f"wall time: {manifest['wall_seconds']} s")
  print(f"output: {manifest['output_dir']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
