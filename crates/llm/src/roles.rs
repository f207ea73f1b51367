//! Roles and how each gets its backend.
//!
//! Four jobs talk to models — the generator (decompose, vary), the responder (FGIV-A/R
//! answers), the judge, and the model under test — and each is configured on its own, from a
//! flag, an environment variable or the TOML config file, in that order of precedence, falling
//! back to a default spec and finally to the embedded model. A spec is a short string:
//! `embedded`, `embedded:PATH.gguf`, or `MODEL@BASE_URL[,BASE_URL...]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ledger::PriceTable;
use crate::openai::EndpointConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleName {
    Generator,
    Responder,
    Judge,
    Target,
}

impl RoleName {
    pub const ALL: [RoleName; 4] = [
        RoleName::Generator,
        RoleName::Responder,
        RoleName::Judge,
        RoleName::Target,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RoleName::Generator => "generator",
            RoleName::Responder => "responder",
            RoleName::Judge => "judge",
            RoleName::Target => "target",
        }
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a role's answers come from.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendSpec {
    /// The in-process model; `None` means the default SmolLM2 from the model store.
    Embedded { model_path: Option<PathBuf> },
    /// An OpenAI-compatible server (or several replicas).
    Endpoint(EndpointConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Spec(String),
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl BackendSpec {
    /// Parses `embedded`, `embedded:PATH` or `MODEL@URL[,URL...]`.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let spec = spec.trim();
        if spec == "embedded" {
            return Ok(BackendSpec::Embedded { model_path: None });
        }
        if let Some(path) = spec.strip_prefix("embedded:") {
            if path.is_empty() {
                return Err(ConfigError::Spec(
                    "`embedded:` needs a GGUF path after the colon".into(),
                ));
            }
            return Ok(BackendSpec::Embedded {
                model_path: Some(PathBuf::from(path)),
            });
        }
        let Some((model, urls)) = spec.rsplit_once('@') else {
            return Err(ConfigError::Spec(format!(
                "backend {spec:?} is not `embedded`, `embedded:FILE.gguf` or `MODEL@http://HOST:PORT/v1`"
            )));
        };
        let base_urls: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if model.is_empty() || base_urls.is_empty() {
            return Err(ConfigError::Spec(format!(
                "backend {spec:?}: both MODEL and a base URL are needed"
            )));
        }
        if let Some(bad) = base_urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(ConfigError::Spec(format!(
                "backend {spec:?}: {bad:?} is not an http(s) URL"
            )));
        }
        Ok(BackendSpec::Endpoint(EndpointConfig {
            base_urls,
            model: model.to_owned(),
            ..Default::default()
        }))
    }
}

/// One role's table in the config file. `backend` is a spec string; the other keys tune an
/// endpoint and override its defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub backend: Option<String>,
    pub api_key_env: Option<String>,
    pub max_concurrency: Option<usize>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub timeout_s: Option<f64>,
    pub max_retries: Option<u32>,
}

impl RoleConfig {
    /// Fields set in `self` win over those in `base`.
    pub fn or(&self, base: &RoleConfig) -> RoleConfig {
        RoleConfig {
            backend: self.backend.clone().or_else(|| base.backend.clone()),
            api_key_env: self
                .api_key_env
                .clone()
                .or_else(|| base.api_key_env.clone()),
            max_concurrency: self.max_concurrency.or(base.max_concurrency),
            rpm: self.rpm.or(base.rpm),
            tpm: self.tpm.or(base.tpm),
            timeout_s: self.timeout_s.or(base.timeout_s),
            max_retries: self.max_retries.or(base.max_retries),
        }
    }

    fn apply_to(&self, cfg: &mut EndpointConfig) {
        if let Some(v) = &self.api_key_env {
            cfg.api_key_env = Some(v.clone());
        }
        if let Some(v) = self.max_concurrency {
            cfg.max_concurrency = v;
        }
        if self.rpm.is_some() {
            cfg.rpm = self.rpm;
        }
        if self.tpm.is_some() {
            cfg.tpm = self.tpm;
        }
        if let Some(v) = self.timeout_s {
            cfg.timeout_s = v;
        }
        if let Some(v) = self.max_retries {
            cfg.max_retries = v;
        }
    }
}

/// The TOML config file (`--config FILE`).
///
/// ```toml
/// cache = "cache.sqlite"
/// budget_usd = 5.0
/// [prices]
/// "gpt-4o-mini" = { input = 0.15, output = 0.60 }   # USD per million tokens
/// [roles.default]
/// backend = "embedded"
/// [roles.judge]
/// backend = "gpt-4o-mini@https://api.openai.com/v1"
/// api_key_env = "OPENAI_API_KEY"
/// rpm = 500
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub cache: Option<PathBuf>,
    pub budget_usd: Option<f64>,
    #[serde(default)]
    pub prices: PriceTable,
    /// `default`, `generator`, `responder`, `judge`, `target`.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleConfig>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parsed: ConfigFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let message = match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_owned(),
            };
            ConfigError::Parse {
                path: path.to_owned(),
                message,
            }
        })?;
        for name in parsed.roles.keys() {
            if name != "default" && !RoleName::ALL.iter().any(|r| r.as_str() == name) {
                return Err(ConfigError::Parse {
                    path: path.to_owned(),
                    message: format!(
                        "unknown role [roles.{name}]; use default, generator, responder, judge or target"
                    ),
                });
            }
        }
        Ok(parsed)
    }

    pub fn role(&self, name: &str) -> RoleConfig {
        self.roles.get(name).cloned().unwrap_or_default()
    }
}

/// Resolves one role's backend. `flag` is the role's own flag or env value, `overrides` the
/// endpoint knobs given on the command line (they win over the file).
pub fn resolve(
    role: RoleName,
    flag: Option<&str>,
    default_flag: Option<&str>,
    file: &ConfigFile,
    overrides: &RoleConfig,
) -> Result<BackendSpec, ConfigError> {
    let from_file = file.role(role.as_str()).or(&file.role("default"));
    let spec = flag
        .map(str::to_owned)
        .or_else(|| file.role(role.as_str()).backend)
        .or_else(|| default_flag.map(str::to_owned))
        .or_else(|| file.role("default").backend)
        .unwrap_or_else(|| "embedded".to_owned());
    let mut backend =
        BackendSpec::parse(&spec).map_err(|e| ConfigError::Spec(format!("{role}: {e}")))?;
    if let BackendSpec::Endpoint(cfg) = &mut backend {
        overrides.or(&from_file).apply_to(cfg);
    }
    Ok(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            BackendSpec::parse("embedded").unwrap(),
            BackendSpec::Embedded { model_path: None }
        );
        assert_eq!(
            BackendSpec::parse("embedded:/m/x.gguf").unwrap(),
            BackendSpec::Embedded {
                model_path: Some(PathBuf::from("/m/x.gguf"))
            }
        );
        let BackendSpec::Endpoint(cfg) =
            BackendSpec::parse("qwen@http://a:1/v1,http://b:2/v1").unwrap()
        else {
            panic!("expected endpoint")
        };
        assert_eq!(cfg.model, "qwen");
        assert_eq!(cfg.base_urls, vec!["http://a:1/v1", "http://b:2/v1"]);
        assert!(BackendSpec::parse("gpt-4o").is_err());
        assert!(BackendSpec::parse("m@ftp://x").is_err());
        assert!(BackendSpec::parse("@http://x").is_err());
    }

    #[test]
    fn precedence_flag_then_file_role_then_default() {
        let file = ConfigFile::parse(
            Path::new("c.toml"),
            r#"
            [roles.default]
            backend = "d@http://default/v1"
            rpm = 10
            [roles.judge]
            backend = "j@http://judge/v1"
            api_key_env = "JUDGE_KEY"
            "#,
        )
        .unwrap();
        let none = RoleConfig::default();
        let judge = resolve(RoleName::Judge, None, None, &file, &none).unwrap();
        let BackendSpec::Endpoint(j) = judge else {
            panic!()
        };
        assert_eq!(
            (j.model.as_str(), j.api_key_env.as_deref(), j.rpm),
            ("j", Some("JUDGE_KEY"), Some(10))
        );
        let BackendSpec::Endpoint(g) =
            resolve(RoleName::Generator, None, None, &file, &none).unwrap()
        else {
            panic!()
        };
        assert_eq!(g.model, "d");
        let flagged = resolve(RoleName::Judge, Some("embedded"), None, &file, &none).unwrap();
        assert_eq!(flagged, BackendSpec::Embedded { model_path: None });
        let cli = RoleConfig {
            rpm: Some(99),
            ..Default::default()
        };
        let BackendSpec::Endpoint(j) = resolve(RoleName::Judge, None, None, &file, &cli).unwrap()
        else {
            panic!()
        };
        assert_eq!(j.rpm, Some(99));
        let empty = ConfigFile::default();
        assert_eq!(
            resolve(RoleName::Target, None, None, &empty, &none).unwrap(),
            BackendSpec::Embedded { model_path: None }
        );
    }

    #[test]
    fn config_errors_name_the_line() {
        let err =
            ConfigFile::parse(Path::new("c.toml"), "[roles.judge]\nbackend = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("c.toml") && msg.contains("line 2"), "{msg}");
        let err = ConfigFile::parse(Path::new("c.toml"), "[roles.jduge]\n").unwrap_err();
        assert!(err.to_string().contains("unknown role"), "{err}");
    }
}
