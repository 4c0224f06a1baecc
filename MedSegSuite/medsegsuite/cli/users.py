"""``medsegsuite users add|list|revoke``: the people who may use a server, each with a role and a key."""
from __future__ import annotations

DESCRIPTION = """\
Manage the users of a medsegsuite server. Each user gets a key of their own and a role:
  clinician  segment and adapt
  annotator  also train scribble models and CoSAM heads
  admin      also deploy models and run/deploy DyNA nights
Keys are stored hashed: 'add' prints the new key once; give it to the user (they save it in the Slicer
hub or a key file). 'revoke' stops a key at the server's next request, without a restart. Adding an
existing user again gives them a new key (key rotation) and revokes the old one.

  medsegsuite users add dr-smith --role clinician
  medsegsuite users list
  medsegsuite users revoke dr-smith"""


def default_users_file() -> str:
    """``$MEDSEGSUITE_HOME/server/users.json``, in a folder only the server's user may enter."""
    import os

    from ..models.registry import user_home

    d = user_home() / "server"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return str(d / "users.json")


def register(sub):
    import argparse

    p = sub.add_parser("users", help="add, list or revoke the users (keys and roles) of a server",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    us = p.add_subparsers(dest="users_command", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--users-file", metavar="F", default=None,
                        help="the server's users file (default $MEDSEGSUITE_HOME/server/users.json; the same "
                             "as medsegsuite serve's)")
    a = us.add_parser("add", parents=[common], help="add a user (or give one a new key); prints the key once")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=("clinician", "annotator", "admin"))
    lst = us.add_parser("list", parents=[common], help="users, roles, key ids and dates (never keys)")
    r = us.add_parser("revoke", parents=[common], help="revoke a user's key")
    r.add_argument("name")
    for q in (a, lst, r):
        q.set_defaults(func=run)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def run(args):
    from ..server.users import UserStore

    store = UserStore(args.users_file or default_users_file())
    if args.users_command == "add":
        key = store.add(args.name, args.role)
        print(f"user {args.name} ({args.role}) in {store.path}\n"
              f"key (shown once; give it to {args.name} over a private channel):\n\n  {key}\n")
    elif args.users_command == "list":
        rows = store.list()
        if not rows:
            print(f"no users in {store.path}")
        for u in rows:
            state = f"revoked {u['revoked']}" if u.get("revoked") else "active"
            print(f"{u['name']:<24} {u['role']:<10} key mss_{u['key_id']}_…  created {u['created']}  {state}")
    elif args.users_command == "revoke":
        store.revoke(args.name)
        print(f"revoked {args.name}: their key is refused from the server's next request")
    return 0
