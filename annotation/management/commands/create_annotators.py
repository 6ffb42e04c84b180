from django.core.management.base import BaseCommand, CommandError

from annotation.services.accounts import annotator_rows_parse, annotators_create, password_set_link
from catalog.prompt_import import ImportFileError


class Command(BaseCommand):
    help = (
        "Create annotator accounts from a CSV (username, email, optional name), all or none, and print a "
        "one-time set-password link for each new account. Existing accounts are reported and left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="path", required=True, metavar="CSV", help="Columns: username, email, name.")
        parser.add_argument(
            "--base-url", default="http://localhost:8000",
            help="Where annotators reach the site; the links start with it (default http://localhost:8000).",
        )
        parser.add_argument("--print-passwords", action="store_true", help="Also set and print a random password.")
        parser.add_argument(
            "--reset-existing", action="store_true",
            help="Give existing accounts new credentials (their password stops working) and put them in the annotators group.",
        )

    def handle(self, *args, path, base_url, print_passwords, reset_existing, **options):
        try:
            rows = annotator_rows_parse(path)
        except ImportFileError as exc:
            raise CommandError(f"{exc} (nothing was created)") from exc
        accounts = annotators_create(rows=rows, reset_existing=reset_existing, with_passwords=print_passwords)
        for account in accounts:
            username = account.user.get_username()
            if account.outcome == "existing":
                self.stdout.write(f"{username}: exists, left alone (--reset-existing gives it new credentials)")
                continue
            line = f"{username}: {account.outcome}; set a password at {password_set_link(user=account.user, base_url=base_url)}"
            if account.password:
                line += f" (or log in with {account.password})"
            self.stdout.write(line)
        created = sum(a.outcome == "created" for a in accounts)
        reset = sum(a.outcome == "reset" for a in accounts)
        self.stdout.write(self.style.SUCCESS(
            f"{created} annotators created, {reset} reset, {len(accounts) - created - reset} left alone; "
            "each link works once, until the password is set"
        ))
