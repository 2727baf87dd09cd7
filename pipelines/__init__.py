"""The quixstreams applications, their steps, the CLI, and the one wiring function."""

import contextlib
import warnings

# confluent-kafka's schema-registry module (imported by quixstreams) imports a deprecated
# authlib module; the worker uses neither, and the warning would otherwise start every
# command's output. authlib forces its warnings on when imported, so import it first and
# then put our filter in front of its own.
with contextlib.suppress(ImportError):
    import authlib.deprecate  # noqa: F401
warnings.filterwarnings("ignore", message="The httpx module is deprecated")
