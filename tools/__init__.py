"""tools: programs that drive the other packages (the demo)."""

import lmid_tf  # noqa: F401
