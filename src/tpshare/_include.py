"""Where tpshare.h is, for building C extensions against tpshare.

This module imports nothing from tpshare, and tpshare's __init__ imports
it before the compiled core: a build that only needs the header works
where ``tpshare._tpshare`` cannot be imported (another build of the
interpreter, a sanitizer runtime missing from the build's process).
"""

import os

_HEADER = "tpshare.h"


def get_include() -> str:
    """Return the folder holding ``tpshare.h``, for building extensions.

    An installed tpshare has the header inside the package
    (``tpshare/include``).  An editable install runs the package from the
    source tree, where the header is in ``include/`` at the tree's root.
    Raises FileNotFoundError when neither holds it.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    candidates = [
        os.path.join(package, "include"),
        os.path.join(os.path.dirname(os.path.dirname(package)), "include"),
    ]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, _HEADER)):
            return folder
    raise FileNotFoundError(
        f"tpshare's C header {_HEADER} is in none of: " + ", ".join(candidates)
    )
