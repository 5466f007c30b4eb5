"""Projects from git repositories: one mirror per URL, one immutable snapshot per commit.

Layout under ``<home>/sources/git/<key>/``: ``mirror.git`` (a bare mirror clone), ``lock``,
and ``snapshots/<commit>/`` (the tree at that commit, files read-only). The mirror is fetched
only when the requested version is not already there or has moved: a branch, a tag or the
default branch (HEAD) is checked against the remote with one ``git ls-remote``, however it is
spelled (``v1``, ``tags/v1``, ``refs/tags/v1``, ``v1^{}``, ``main~2``, ``HEAD``); a tag is used
from the cache, with a warning, only when the remote does not answer (a branch never is).
Only a commit id (7 to 40 hex digits that the commit found starts with) needs no check.
Authentication is the user's own git configuration, or ``user:password@`` in an http(s) URL,
which git gets through a credential helper reading this process's environment: never on a
command line or in a file.

The package, one module per concern: command (running git: credentials through a helper,
never on a command line; no prompts; a timeout; nothing of git's left behind when reprorun
dies), refs (which commit a version names now: the version's grammar and its check against
the remote) and mirror (the mirror and snapshots under the cache, ``resolve_git``).
"""
