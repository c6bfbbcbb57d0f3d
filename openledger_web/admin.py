from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import User, WorkerHeartbeat


@admin.register(User)
class OpenledgerUserAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Roles", {"fields": ("is_global_curator",)}))
    list_display = ("username", "email", "is_global_curator", "is_staff", "date_joined", "last_login")
    list_filter = ("is_global_curator", "is_staff", "is_superuser", "is_active")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("hostname", "queues", "pid", "started_at", "last_seen")
    readonly_fields = ("hostname", "queues", "pid", "started_at", "last_seen")
