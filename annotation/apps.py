from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self):
        from annotation.roles import roles_ensure

        post_migrate.connect(roles_ensure, dispatch_uid="annotation.roles_ensure")
