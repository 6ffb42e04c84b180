import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from annotation.models import ANNOTATORS_GROUP, RESEARCHERS_GROUP


class Command(BaseCommand):
    help = "Create (or reset) a researcher and N annotator accounts with fresh random passwords, and print them."

    def add_arguments(self, parser):
        parser.add_argument("--annotators", type=int, default=5)

    @transaction.atomic
    def handle(self, *args, annotators, **options):
        User = get_user_model()
        researchers = Group.objects.get(name=RESEARCHERS_GROUP)
        annotator_group = Group.objects.get(name=ANNOTATORS_GROUP)
        accounts = [("researcher", researchers, True)] + [
            (f"annotator{i}", annotator_group, False) for i in range(1, annotators + 1)
        ]
        self.stdout.write("Demo accounts (passwords are new on every run):")
        for username, group, staff in accounts:
            password = secrets.token_urlsafe(9)
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_staff = staff
            user.save()
            user.groups.add(group)
            self.stdout.write(f"  {group.name[:-1]:<10} {username:<12} {password}")
