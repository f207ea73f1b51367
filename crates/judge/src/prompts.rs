//! Prompt sets: the project's prompts, one TOML file a purpose under `prompts/` at the
//! repository root (a pipeline stage, a benchmark's judge), compiled into the binary and
//! overridable file by file with `--prompts DIR`.
//!
//! A file has a `version` and one table per template (`system`, `user` — minijinja, strict
//! about undefined variables — and optional few-shot `shots`). The version that enters the
//! cache key is `{file}/{version}+{hash of the file}`: editing a prompt re-asks the model even
//! if nobody bumps the number, and the number stays for humans and reports.
//!
//! Which files exist and which templates each must have is declared once, in [`BUILTIN`]; the
//! pipeline and the benchmarks ask for their own files by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use demorecon_llm::Message;
use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;

/// One built-in prompt file: its name, its text, and the templates it must define.
pub struct Builtin {
    pub name: &'static str,
    pub text: &'static str,
    pub templates: &'static [&'static str],
}

/// Every built-in prompt file. The pipeline's stages use the first five; the benchmarks'
/// judges the rest.
pub const BUILTIN: &[Builtin] = &[
    Builtin {
        name: "filter",
        text: include_str!("../../../prompts/filter.toml"),
        templates: &["check"],
    },
    Builtin {
        name: "decompose",
        text: include_str!("../../../prompts/decompose.toml"),
        templates: &["split"],
    },
    Builtin {
        name: "vary",
        text: include_str!("../../../prompts/vary.toml"),
        templates: &["modify"],
    },
    Builtin {
        name: "respond",
        text: include_str!("../../../prompts/respond.toml"),
        templates: &["answer", "revise"],
    },
    Builtin {
        name: "verify",
        text: include_str!("../../../prompts/verify.toml"),
        templates: &["judge"],
    },
    Builtin {
        name: "fgiv",
        text: include_str!("../../../prompts/fgiv.toml"),
        templates: &["pass", "detect"],
    },
    Builtin {
        name: "infobench",
        text: include_str!("../../../prompts/infobench.toml"),
        templates: &["judge"],
    },
    Builtin {
        name: "followbench",
        text: include_str!("../../../prompts/followbench.toml"),
        templates: &["judge", "strict"],
    },
];

/// The pipeline's prompt files (what a run folder's identity records).
pub const PIPELINE_FILES: [&str; 5] = ["filter", "decompose", "vary", "respond", "verify"];

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("prompt {file}.{template}: {message}")]
    Render {
        file: String,
        template: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Shot {
    user: String,
    assistant: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    #[serde(default)]
    system: String,
    user: String,
    #[serde(default)]
    shots: Vec<Shot>,
}

#[derive(Debug, Clone, Deserialize)]
struct PromptFile {
    version: String,
    #[serde(flatten)]
    templates: BTreeMap<String, Template>,
}

/// Every stage's prompts, parsed and compiled.
pub struct PromptSet {
    files: BTreeMap<String, (String, PromptFile)>,
    env: Environment<'static>,
}

impl std::fmt::Debug for PromptSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.files.iter().map(|(k, (v, _))| (k, v)))
            .finish()
    }
}

impl PromptSet {
    /// The prompts compiled into the binary.
    pub fn builtin() -> Self {
        Self::load(None).expect("the built-in prompts are valid (tested)")
    }

    /// The built-in prompts with any `{file}.toml` found in `dir` in their place.
    pub fn with_overrides(dir: &Path) -> Result<Self, PromptError> {
        if !dir.is_dir() {
            return Err(PromptError::File {
                path: dir.to_owned(),
                message: "--prompts must be a folder of {name}.toml prompt files".into(),
            });
        }
        Self::load(Some(dir))
    }

    fn load(dir: Option<&Path>) -> Result<Self, PromptError> {
        let mut files = BTreeMap::new();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for builtin in BUILTIN {
            let stage = builtin.name;
            let (path, text) = match dir.map(|d| d.join(format!("{stage}.toml"))) {
                Some(path) if path.is_file() => {
                    let text = std::fs::read_to_string(&path).map_err(|e| PromptError::File {
                        path: path.clone(),
                        message: format!("cannot read: {e}"),
                    })?;
                    (path, text)
                }
                _ => (
                    PathBuf::from(format!("prompts/{stage}.toml")),
                    builtin.text.to_owned(),
                ),
            };
            let file_err = |message: String| PromptError::File {
                path: path.clone(),
                message,
            };
            let parsed: PromptFile = toml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
            for (name, template) in &parsed.templates {
                for (part, source) in [("system", &template.system), ("user", &template.user)] {
                    env.add_template_owned(format!("{stage}.{name}.{part}"), source.clone())
                        .map_err(|e| file_err(format!("[{name}] {part}: {e}")))?;
                }
            }
            for name in builtin.templates {
                if !parsed.templates.contains_key(*name) {
                    return Err(file_err(format!("{stage}.toml needs a [{name}] table")));
                }
            }
            let digest = blake3::hash(text.as_bytes()).to_hex();
            let tag = format!("{stage}/{}+{}", parsed.version, &digest[..8]);
            files.insert(stage.to_owned(), (tag, parsed));
        }
        Ok(Self { files, env })
    }

    /// The version tag of a stage's prompt file (what enters the cache key).
    pub fn version(&self, file: &str) -> &str {
        self.files.get(file).map(|(v, _)| v.as_str()).unwrap_or("")
    }

    /// The version tags of `files`, for a manifest or a summary.
    pub fn versions_of(&self, files: &[&str]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|f| (f.to_string(), self.version(f).to_owned()))
            .collect()
    }

    /// The messages for one request: system, few-shot pairs, then the rendered user turn.
    pub fn render(
        &self,
        file: &str,
        template: &str,
        vars: minijinja::Value,
    ) -> Result<Vec<Message>, PromptError> {
        let render_err = |message: String| PromptError::Render {
            file: file.to_owned(),
            template: template.to_owned(),
            message,
        };
        let t = self
            .files
            .get(file)
            .and_then(|(_, f)| f.templates.get(template))
            .ok_or_else(|| render_err("no such template".into()))?;
        let render = |part: &str| {
            self.env
                .get_template(&format!("{file}.{template}.{part}"))
                .and_then(|t| t.render(&vars))
                .map_err(|e| render_err(format!("{part}: {e:#}")))
        };
        let mut messages = Vec::with_capacity(2 + 2 * t.shots.len());
        let system = render("system")?;
        if !system.trim().is_empty() {
            messages.push(Message::system(system));
        }
        for shot in &t.shots {
            messages.push(Message::user(shot.user.clone()));
            messages.push(Message::assistant(shot.assistant.clone()));
        }
        messages.push(Message::user(render("user")?));
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn builtin_prompts_load_and_render() {
        let p = PromptSet::builtin();
        let m = p
            .render(
                "vary",
                "modify",
                context! { instruction => "Do A. Do B.", sub_instructions => vec!["do A", "do B"], k => 1, sub_instruction => "do B" },
            )
            .unwrap();
        let user = &m.last().unwrap().content;
        assert!(user.contains("1. do A\n2. do B\n"), "{user}");
        assert!(user.ends_with("Change requirement 2: do B"), "{user}");
        assert_eq!(m[0].role, demorecon_llm::Role::System);
        assert!(p.version("vary").starts_with("vary/2+"));
        assert_eq!(p.versions_of(&PIPELINE_FILES).len(), 5);
        assert!(p.versions_of(&PIPELINE_FILES)["verify"].starts_with("verify/"));
    }

    #[test]
    fn missing_variables_are_errors() {
        let p = PromptSet::builtin();
        let err = p
            .render("filter", "check", context! { nothing => 1 })
            .unwrap_err();
        assert!(err.to_string().contains("filter.check"), "{err}");
    }

    #[test]
    fn overrides_replace_one_file_and_change_its_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("filter.toml"),
            "version = \"7\"\n[check]\nuser = \"Q: {{ instruction }}\"\n",
        )
        .unwrap();
        let p = PromptSet::with_overrides(dir.path()).unwrap();
        assert!(p.version("filter").starts_with("filter/7+"));
        assert_eq!(p.version("vary"), PromptSet::builtin().version("vary"));
        let m = p
            .render("filter", "check", context! { instruction => "x" })
            .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].content, "Q: x");

        std::fs::write(
            dir.path().join("verify.toml"),
            "version = \"1\"\n[other]\nuser = \"x\"\n",
        )
        .unwrap();
        let err = PromptSet::with_overrides(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify.toml needs a [judge] table"), "{err}");
        std::fs::write(dir.path().join("verify.toml"), "version = \n").unwrap();
        let err = PromptSet::with_overrides(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("verify.toml") && err.contains("line 1"),
            "{err}"
        );
    }
}
