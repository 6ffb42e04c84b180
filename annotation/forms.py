"""The login forms of the login page and the admin: a locked login says so, and for how long."""

from __future__ import annotations

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from annotation.login_throttle import lockout_message, login_lockout

LOGIN_LOCKED = "login_locked"


class LockoutMessageMixin:
    """After a refused login, tell a locked account or address how long to wait.

    The lock itself is enforced by ``RolesBackend``; ``retry_after`` holds the seconds left.
    """

    retry_after: int = 0

    def clean(self):
        try:
            return super().clean()
        except forms.ValidationError:
            self.retry_after = login_lockout(request=self.request, username=self.cleaned_data.get("username"))
            if self.retry_after:
                raise forms.ValidationError(lockout_message(self.retry_after), code=LOGIN_LOCKED) from None
            raise


class LoginForm(LockoutMessageMixin, AuthenticationForm):
    error_messages = {**AuthenticationForm.error_messages, "invalid_login": "Wrong username or password."}


class AdminLoginForm(LockoutMessageMixin, AdminAuthenticationForm):
    pass
