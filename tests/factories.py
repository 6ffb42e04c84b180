"""factory_boy factories for the project's records."""

from __future__ import annotations

import hashlib
import io

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from PIL import Image as PILImage

from annotation.models import ANNOTATORS_GROUP, RESEARCHERS_GROUP
from catalog.models import AlignmentQuestion, Image, ModelVersion, Prompt, PromptSet


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class AnnotatorFactory(UserFactory):
    username = factory.Sequence(lambda n: f"annotator{n}")

    @factory.post_generation
    def groups(obj, create, extracted, **kwargs):
        if create:
            obj.groups.add(Group.objects.get_or_create(name=ANNOTATORS_GROUP)[0])


class ResearcherFactory(UserFactory):
    username = factory.Sequence(lambda n: f"researcher{n}")
    is_staff = True

    @factory.post_generation
    def groups(obj, create, extracted, **kwargs):
        if create:
            obj.groups.add(Group.objects.get_or_create(name=RESEARCHERS_GROUP)[0])


class PromptSetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromptSet
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"set{n}")


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    prompt_set = factory.SubFactory(PromptSetFactory)
    external_id = factory.Sequence(lambda n: f"p{n}")
    text = factory.Sequence(lambda n: f"a photo of object number {n}")
    category = "Animals"


class AlignmentQuestionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AlignmentQuestion

    prompt = factory.SubFactory(PromptFactory)
    order = factory.Sequence(lambda n: n + 1)
    text = factory.Sequence(lambda n: f"Is there object {n}?")


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"model-{n}")
    family = "unet"
    prediction_type = "epsilon"
    pipeline_class = "StableDiffusionPipeline"
    local_path = factory.LazyAttribute(lambda o: f"/models/{o.name}")


def png_bytes(color=(200, 30, 30), size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


class ImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Image

    class Params:
        color = (200, 30, 30)

    prompt = factory.SubFactory(PromptFactory)
    model_version = factory.SubFactory(ModelVersionFactory)
    seed = factory.Sequence(lambda n: n)
    sampler = factory.LazyFunction(lambda: {"scheduler": "ddim", "steps": 50, "guidance_scale": 7.5})
    file = factory.LazyAttribute(lambda o: ContentFile(png_bytes(o.color), name="upload.png"))
    sha256 = factory.LazyAttribute(lambda o: hashlib.sha256(png_bytes(o.color)).hexdigest())
