//! `[[regions]]`: the residency regions this deployment serves, declared
//! once. Every other region name of the configuration (the server's
//! default, each provider's and tool's) and of the API (a tenant's) must be
//! one of them, so a typo (`"usa"`, `"mars"`) is refused instead of leaving
//! a tenant or a provider that nothing can reach.
//!
//! Without `[[regions]]` the set is derived: `server.default_region` and
//! the region of every `[[providers]]` entry (a region is served once a
//! model can be called in it). Declaring the list is what also catches a
//! mistyped provider region. A configuration with neither (the embedded
//! default) calls no model anywhere, so it has nothing to check a region
//! against: every well-formed region is accepted there.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::Config;
use super::error::Errors;
use crate::Region;

/// One `[[regions]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// The region's name (lowercase letters, digits and `-`).
    pub name: Region,
    /// A PostgreSQL database for the region's tenants: part of the
    /// contract's scale-out additions, not built yet, so it is refused
    /// rather than stored and ignored.
    pub postgres_url: Option<String>,
}

/// The regions of a loaded configuration, in name order; `None` when it
/// declares none and has no providers (every region is accepted).
pub fn known(config: &Config) -> Option<BTreeSet<Region>> {
    if !config.regions.is_empty() {
        return Some(config.regions.iter().map(|r| r.name.clone()).collect());
    }
    if config.providers.is_empty() {
        return None;
    }
    Some(
        std::iter::once(config.server.default_region.clone())
            .chain(config.providers.iter().map(|p| p.region.clone()))
            .collect(),
    )
}

/// Whether `region` is one of `known` (`None`: any); the error names them.
pub fn check(known: Option<&BTreeSet<Region>>, region: &Region) -> Result<(), String> {
    let Some(known) = known else { return Ok(()) };
    if known.contains(region) {
        return Ok(());
    }
    let names: Vec<&str> = known.iter().map(Region::as_str).collect();
    Err(format!(
        "{:?} is not one of this deployment's regions ({})",
        region.as_str(),
        names.join(", ")
    ))
}

/// Checks the list itself, then every region the configuration names.
pub(super) fn validate(config: &Config, errors: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, r) in config.regions.iter().enumerate() {
        if !seen.insert(r.name.clone()) {
            errors.push(
                format!("regions[{i}].name"),
                format!("region {:?} is declared twice", r.name.as_str()),
            );
        }
        if r.postgres_url.is_some() {
            errors.push(
                format!("regions[{i}].postgres_url"),
                "a PostgreSQL database per region is not built yet (the store is the embedded SQLite); remove the key",
            );
        }
    }
    let Some(known) = known(config) else { return };
    let hint = if config.regions.is_empty() {
        " (without [[regions]] they are server.default_region and the providers' regions; declare [[regions]] to add one)"
    } else {
        ""
    };
    let mut named = vec![(
        "server.default_region".to_owned(),
        &config.server.default_region,
    )];
    named.extend(
        config
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("providers[{i}].region"), &p.region)),
    );
    named.extend(
        config
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("tools[{i}].region"), &t.region)),
    );
    for (path, region) in named {
        if let Err(e) = check(Some(&known), region) {
            errors.push(path, format!("{e}{hint}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check as check_config, env};
    use super::*;

    const PROVIDER: &str = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\nregion = \"us\"\n";

    #[test]
    fn without_a_list_the_regions_are_the_default_and_the_providers() {
        let c = super::super::load(PROVIDER, &env).unwrap();
        let known = known(&c).unwrap();
        let names: Vec<&str> = known.iter().map(Region::as_str).collect();
        assert_eq!(names, ["local", "us"]);
        let e = check(Some(&known), &Region::parse("mars").unwrap()).unwrap_err();
        assert_eq!(
            e,
            "\"mars\" is not one of this deployment's regions (local, us)"
        );
        // The embedded default calls no model: nothing to check against.
        let embedded = super::super::load("", &env).unwrap();
        assert!(known_is_open(&embedded));
    }

    fn known_is_open(c: &Config) -> bool {
        known(c).is_none() && check(None, &Region::parse("mars").unwrap()).is_ok()
    }

    #[test]
    fn a_declared_list_is_the_only_set_and_catches_a_mistyped_provider() {
        let text = format!(
            "[server]\ndefault_region = \"eu\"\n[[regions]]\nname = \"eu\"\n[[regions]]\nname = \"usa\"\n{PROVIDER}"
        );
        check_config(
            &text,
            &["providers[0].region: \"us\" is not one of this deployment's regions (eu, usa)"],
        );
    }

    #[test]
    fn a_tool_in_a_region_nothing_serves_is_refused() {
        let text = format!(
            "{}[[tools]]\nname = \"s\"\nkind = \"slack\"\nbase_url = \"https://slack.com/api\"\nregion = \"eu\"\nconnection = \"slack\"\n",
            PROVIDER
        );
        check_config(
            &text,
            &[
                "tools[0].region: \"eu\" is not one of this deployment's regions (local, us) (without [[regions]]",
            ],
        );
    }

    #[test]
    fn duplicates_and_the_unbuilt_postgres_url_are_refused() {
        let text = "[server]\ndefault_region = \"eu\"\n[[regions]]\nname = \"eu\"\npostgres_url = \"env:PG\"\n[[regions]]\nname = \"eu\"\n";
        check_config(
            text,
            &[
                "regions[0].postgres_url: a PostgreSQL database per region is not built yet",
                "regions[1].name: region \"eu\" is declared twice",
            ],
        );
    }

    #[test]
    fn the_default_region_must_be_declared_when_a_list_is() {
        check_config(
            "[[regions]]\nname = \"us\"\n",
            &["server.default_region: \"local\" is not one of this deployment's regions (us)"],
        );
    }
}
