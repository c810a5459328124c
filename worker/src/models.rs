//! The models a worker hosts: the generator every unit's calls run on and,
//! where the operator names one, a judge model that runs the checks a
//! model cannot do on its own output (faithfulness, the rubric).

use std::sync::Arc;

use crate::engine::{Engine, EngineConfig, EngineError};

#[derive(Debug, Clone)]
pub struct Models {
    pub generator: Arc<Engine>,
    pub judge: Option<Arc<Engine>>,
}

impl Models {
    /// A worker with one model: it generates and, if a plan asks, judges.
    pub fn generator_only(generator: Arc<Engine>) -> Self {
        Self {
            generator,
            judge: None,
        }
    }

    /// Loads the generator, then the judge model if one is named.
    pub fn start(
        generator: EngineConfig,
        judge: Option<EngineConfig>,
    ) -> Result<Self, EngineError> {
        let generator = Arc::new(Engine::start(generator)?);
        let judge = judge.map(Engine::start).transpose()?.map(Arc::new);
        Ok(Self { generator, judge })
    }

    /// The engine judge calls run on: the judge model where there is one.
    pub fn judging(&self) -> &Engine {
        self.judge.as_deref().unwrap_or(&self.generator)
    }

    /// The judge model's name, `None` without one.
    pub fn judge_name(&self) -> Option<String> {
        self.judge.as_ref().map(|judge| judge.info().name.clone())
    }
}
