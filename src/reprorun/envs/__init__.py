"""Environment managers: prepare the environment a run's command executes in."""

from reprorun.envs.base import EnvManager, PreparedEnv
from reprorun.envs.registry import env_manager_names, get_env_manager

__all__ = ["EnvManager", "PreparedEnv", "env_manager_names", "get_env_manager"]
