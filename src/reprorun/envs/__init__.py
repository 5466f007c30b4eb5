"""Environment managers: prepare the environment a run's command executes in."""

from reprorun.envs.base import ENV_MANAGERS, EnvManager, PreparedEnv, get_env_manager

__all__ = ["ENV_MANAGERS", "EnvManager", "PreparedEnv", "get_env_manager"]
