//! The chat template: the GGUF's own `tokenizer.chat_template` (a Hugging Face Jinja template)
//! rendered with minijinja, so any GGUF that carries a template is prompted the way its
//! authors intended.
//!
//! Hugging Face renders these with Jinja2 configured with `trim_blocks` and `lstrip_blocks`,
//! and templates lean on Python string methods (`.strip()`, `.startswith()`), `tojson` and a
//! `raise_exception` helper; the environment here reproduces all of those (the Python-isms via
//! `minijinja-contrib`'s pycompat layer).

use demorecon_llm::{Message, Role};
use minijinja::{Environment, ErrorKind, Value, context};

const TEMPLATE_NAME: &str = "chat";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the strings templates may reference.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| anyhow::anyhow!("the GGUF's chat template does not compile: {e:#}"))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The prompt text for `messages`, ending with the assistant turn's opening
    /// (`add_generation_prompt = true`).
    pub fn render(&self, messages: &[Message]) -> Result<String, minijinja::Error> {
        self.render_with(messages, true)
    }

    /// The text for `messages`, with the assistant turn's opening appended when
    /// `add_generation_prompt` (training renders whole conversations without it).
    pub fn render_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, minijinja::Error> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => role_name(m.role), content => m.content.as_str() })
            .collect();
        let template = self.env.get_template(TEMPLATE_NAME)?;
        template.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_isms_and_exceptions_work() {
        let source = "{% for m in messages %}{% if m['role'] not in ['user', 'system'] %}\
            {{ raise_exception('bad role') }}{% endif %}{{ m['content'].strip() | upper }}\n{% endfor %}";
        let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let text = template.render(&[Message::user("  hi  ")]).unwrap();
        assert_eq!(text, "HI\n");
        let err = template.render(&[Message::assistant("x")]).unwrap_err();
        assert!(err.to_string().contains("bad role"), "{err}");
    }
}
