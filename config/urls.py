from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from annotation.forms import AdminLoginForm
from annotation.permissions import IsResearcher
from annotation.views import LoginView

# The admin's login says when it is locked (annotation.login_throttle), as the login page does.
admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # One-time set-password links (manage.py create_annotators prints them).
    path(
        "accounts/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[IsResearcher]), name="api-schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[IsResearcher]),
        name="api-docs",
    ),
    # before annotation's, whose last route answers the rest of /api/
    path("", include("evaluation.api_urls")),
    path("", include("training.api_urls")),
    path("", include("annotation.api_urls")),
    path("", include("annotation.urls")),
    path("", include("evaluation.urls")),
]
