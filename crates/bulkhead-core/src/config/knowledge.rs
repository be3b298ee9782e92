//! `[[embedding_models]]` and `[knowledge]`: the embedding models, and which
//! of them knowledge collections use (at most one per region).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Config;
use super::error::Errors;
use super::names::check_unique;
use super::providers::{ProviderConfig, ProviderKind};
use crate::Region;
use crate::money::Usd;

/// `[[embedding_models]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingModelConfig {
    /// Name.
    pub name: String,
    /// Provider name.
    pub provider: String,
    /// Name sent upstream.
    pub upstream: String,
    /// Vector dimensions.
    pub dimensions: u32,
    /// USD per million input tokens.
    pub price_input_per_mtok: Option<Usd>,
}

/// `[knowledge]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeConfig {
    /// One embedding model name or a list (one per region).
    pub embedding_model: Option<OneOrMany>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

impl Config {
    /// The embedding model `[knowledge]` names for tenants of `region`
    /// (validation allows at most one per region), if any.
    pub fn embedding_model_for(&self, region: &Region) -> Option<&EmbeddingModelConfig> {
        let names = self.knowledge.as_ref()?.embedding_model.as_ref()?.to_vec();
        self.embedding_models.iter().find(|m| {
            names.contains(&m.name)
                && self
                    .providers
                    .iter()
                    .any(|p| p.name == m.provider && &p.region == region)
        })
    }

    /// Every `[knowledge]` embedding model with its provider's region.
    pub fn knowledge_embedding_models(&self) -> Vec<(Region, EmbeddingModelConfig)> {
        let Some(names) = self
            .knowledge
            .as_ref()
            .and_then(|k| k.embedding_model.as_ref())
            .map(OneOrMany::to_vec)
        else {
            return Vec::new();
        };
        self.embedding_models
            .iter()
            .filter(|m| names.contains(&m.name))
            .filter_map(|m| {
                let p = self.providers.iter().find(|p| p.name == m.provider)?;
                Some((p.region.clone(), m.clone()))
            })
            .collect()
    }
}

/// `[[embedding_models]]` and `[knowledge]`: each model on a provider that
/// has an embeddings endpoint, and `[knowledge]` naming known models, one
/// per region.
pub(super) fn validate(
    embedding_models: &[EmbeddingModelConfig],
    knowledge: Option<&KnowledgeConfig>,
    providers: &[ProviderConfig],
    errors: &mut Errors,
) {
    let embeddings = check_unique(
        embedding_models.iter().map(|m| m.name.as_str()),
        "embedding_models",
        errors,
    );
    let mut embedding_region: BTreeMap<&str, &Region> = BTreeMap::new();
    for (i, m) in embedding_models.iter().enumerate() {
        match providers.iter().find(|p| p.name == m.provider) {
            None => errors.push(
                format!("embedding_models[{i}].provider"),
                format!("unknown provider {:?}", m.provider),
            ),
            Some(p) if p.kind == ProviderKind::Anthropic => errors.push(
                format!("embedding_models[{i}].provider"),
                format!(
                    "provider {:?} is an anthropic provider, which has no embeddings endpoint",
                    m.provider
                ),
            ),
            Some(p) => {
                embedding_region.insert(&m.name, &p.region);
            }
        }
        if m.dimensions == 0 || m.dimensions > 8192 {
            errors.push(
                format!("embedding_models[{i}].dimensions"),
                "must be between 1 and 8192",
            );
        }
    }
    if let Some(list) = knowledge.and_then(|k| k.embedding_model.as_ref()) {
        let mut seen_regions: BTreeMap<&Region, &str> = BTreeMap::new();
        let names = list.to_vec();
        for (j, name) in names.iter().enumerate() {
            if let Some(region) = embedding_region.get(name.as_str())
                && let Some(other) = seen_regions.insert(region, name)
            {
                let path = format!("knowledge.embedding_model[{j}]");
                errors.push(
                    path,
                    format!(
                        "{name:?} and {other:?} are both in region {:?}: name one embedding model per region",
                        region.as_str()
                    ),
                );
            }
            if !embeddings.contains(name) {
                let path = match list {
                    OneOrMany::One(_) => "knowledge.embedding_model".to_owned(),
                    OneOrMany::Many(_) => format!("knowledge.embedding_model[{j}]"),
                };
                errors.push(path, format!("unknown embedding model {name:?}"));
            }
        }
    }
}
