from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import post_migrate


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self):
        from annotation.login_throttle import on_logged_in, on_login_failed
        from annotation.roles import roles_ensure

        post_migrate.connect(roles_ensure, dispatch_uid="annotation.roles_ensure")
        user_login_failed.connect(on_login_failed, dispatch_uid="annotation.login_throttle.failed")
        user_logged_in.connect(on_logged_in, dispatch_uid="annotation.login_throttle.logged_in")
