//! Prompts: strict templates written by the operator, and fragments that
//! carry their provenance.
//!
//! Templates are compiled once at boot by minijinja with strict undefined
//! behaviour (a missing variable is an error, never an empty string) and a
//! loader confined to the prompts directory. Tenant-written text (settings
//! variables, instructions, run input, thread history, tool output) only
//! ever enters as *values*: minijinja prints a value, it never parses it,
//! so `{{ ... }}` inside tenant text stays literal text.
//!
//! Each message of an assembled prompt is a [`Fragment`] with an
//! [`Owner`]. [`assemble`] refuses a fragment owned by another tenant: the
//! one place where a bug elsewhere (a wrong cache entry, a mixed-up row)
//! would otherwise carry one tenant's text into another tenant's model call.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use bulkhead_auth::TenantScope;
use bulkhead_core::TenantUid;
use bulkhead_core::config::AgentConfig;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use crate::error::AgentError;

/// Who wrote a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The operator (templates).
    Platform,
    /// A tenant (its settings, inputs, history, tool output).
    Tenant(TenantUid),
}

/// One message of a prompt and who wrote it.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// Provenance.
    pub owner: Owner,
    /// The message, in OpenAI chat format.
    pub message: Value,
}

impl Fragment {
    /// A fragment written by the scope's own tenant.
    pub fn tenant(scope: &TenantScope, message: Value) -> Self {
        Self {
            owner: Owner::Tenant(scope.partition()),
            message,
        }
    }
}

/// A fragment owned by another tenant reached prompt assembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignFragment {
    /// Position in the prompt.
    pub index: usize,
    /// The owner it carried.
    pub owner: TenantUid,
}

/// Checks the provenance of every fragment and returns the messages.
/// Platform fragments and the scope's own tenant's fragments pass; any
/// other owner refuses the whole prompt.
pub fn assemble(
    scope: &TenantScope,
    fragments: Vec<Fragment>,
) -> Result<Vec<Value>, ForeignFragment> {
    let own = scope.partition();
    let mut out = Vec::with_capacity(fragments.len());
    for (index, f) in fragments.into_iter().enumerate() {
        match f.owner {
            Owner::Platform => {}
            Owner::Tenant(t) if t == own => {}
            Owner::Tenant(owner) => return Err(ForeignFragment { index, owner }),
        }
        out.push(f.message);
    }
    Ok(out)
}

/// Tokens a message costs (its text content and tool calls, estimated).
fn message_tokens(m: &Value) -> u64 {
    let content = match m.get("content") {
        Some(Value::String(s)) => bulkhead_knowledge::estimate_tokens(s) as u64,
        Some(Value::Null) | None => 0,
        Some(other) => bulkhead_knowledge::estimate_tokens(&other.to_string()) as u64,
    };
    let calls = m
        .get("tool_calls")
        .map(|c| bulkhead_knowledge::estimate_tokens(&c.to_string()) as u64)
        .unwrap_or(0);
    // Per-message framing, as chat formats add a few tokens each.
    content + calls + 4
}

/// Fits the conversation into `budget` tokens: the leading system messages
/// (the platform prompt, the tenant's instructions, retrieved passages)
/// and the newest turn always stay; older turns — a user message and
/// everything up to the next one, so a tool result never loses the call
/// it answers — leave oldest first. Returns how many messages were left out.
pub fn fit(messages: &mut Vec<Value>, budget: u64) -> usize {
    let head = messages
        .iter()
        .take_while(|m| m.get("role").and_then(Value::as_str) == Some("system"))
        .count();
    let mut total: u64 = messages.iter().map(message_tokens).sum();
    let mut dropped = 0;
    while total > budget {
        // The first turn after the system messages, if another follows it.
        let Some(end) = messages
            .iter()
            .enumerate()
            .skip(head + 1)
            .find(|(_, m)| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(|(i, _)| i)
        else {
            break;
        };
        let removed: Vec<Value> = messages.drain(head..end).collect();
        total -= removed.iter().map(message_tokens).sum::<u64>();
        dropped += removed.len();
    }
    dropped
}

/// What [`fit`] could not drop, cut to fit `budget`: the tool results
/// still in the conversation (the newest turn's) are shortened to a fair
/// share, each with a marker the model sees. Returns whether the
/// conversation now fits; when it does not (the system messages or the
/// user's input alone exceed the budget), the caller must not send it.
pub fn fit_tool_results(messages: &mut [Value], budget: u64) -> bool {
    // A few passes: the markers added by a cut cost tokens of their own.
    for _ in 0..4 {
        let total: u64 = messages.iter().map(message_tokens).sum();
        if total <= budget {
            return true;
        }
        let tools: Vec<usize> = (0..messages.len())
            .filter(|&i| {
                messages[i].get("role").and_then(Value::as_str) == Some("tool")
                    && messages[i].get("content").is_some_and(Value::is_string)
            })
            .collect();
        let tokens: Vec<usize> = tools
            .iter()
            .map(|&i| message_tokens(&messages[i]) as usize)
            .collect();
        let tool_total: usize = tokens.iter().sum();
        let over = (total - budget) as usize;
        if tool_total == 0 {
            return false;
        }
        let share = crate::fanout::fair_share(&tokens, tool_total.saturating_sub(over));
        for (&i, &t) in tools.iter().zip(&tokens) {
            if t <= share {
                continue;
            }
            let Some(text) = messages[i].get("content").and_then(Value::as_str) else {
                continue;
            };
            // Bytes in proportion to the tokens kept (the estimate is
            // monotonic in the text's length).
            let keep = (text.len() as u128 * share as u128 / t.max(1) as u128) as usize;
            let cut = crate::fanout::cut(text, keep);
            messages[i]["content"] = Value::String(cut);
        }
    }
    messages.iter().map(message_tokens).sum::<u64>() <= budget
}

/// The render context of an agent's prompt, in one place: each top-level
/// variable with the attributes it has (`None`: any key, the tenant's own
/// `vars`). `render` builds exactly this; `Prompts::new` refuses a template
/// that looks up anything else, since every run of it would fail.
/// docs/configuration.md (`[[agents]]`) documents the same table.
const RENDER_CONTEXT: &[(&str, Option<&[&str]>)] = &[
    ("agent", Some(&["name", "description"])),
    ("tenant", Some(&["id", "name", "region"])),
    ("vars", None),
    ("date", Some(&[])),
];

/// The context's variables, for error messages.
const RENDER_CONTEXT_NAMES: &str =
    "agent.name, agent.description, tenant.id, tenant.name, tenant.region, vars.NAME, date";

/// The lookups of `template` (`x` or `x.attr`) that the render context,
/// the environment's globals and `bound` (names an including template
/// binds) can never answer, sorted. Static: it sees every branch.
fn unknown_variables(
    env: &Environment<'_>,
    template: &minijinja::Template<'_, '_>,
    bound: &HashSet<String>,
) -> Vec<String> {
    let globals: HashSet<&str> = env.globals().map(|(name, _)| name).collect();
    let mut unknown: Vec<String> = template
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| {
            let mut parts = path.split('.');
            let top = parts.next().unwrap_or_default();
            if globals.contains(top) || bound.contains(top) {
                return false;
            }
            match RENDER_CONTEXT.iter().find(|(name, _)| *name == top) {
                None => true,
                Some((_, None)) => false,
                Some((_, Some(attrs))) => parts.next().is_some_and(|attr| !attrs.contains(&attr)),
            }
        })
        .collect();
    unknown.sort();
    unknown
}

/// Refuses `template` when it, or a template it includes or extends by a
/// literal name, looks up a variable the render context never
/// has, or names a template the prompts directory does not hold (unless
/// `ignore missing`). An included template also sees what the templates
/// that include it bind (`set`, `for`, `with`). This build's minijinja has
/// no macros, so `import`/`from`/`macro` do not compile at all.
/// A template named by an expression cannot be followed before a run and
/// is left to render time. `key` names the configuration key in errors.
fn check_template(
    env: &Environment<'_>,
    template: &minijinja::Template<'_, '_>,
    key: &str,
) -> Result<(), AgentError> {
    // (template, names bound by the templates that led to it, path of names)
    let mut queue = vec![(
        template.name().to_owned(),
        HashSet::new(),
        Vec::<String>::new(),
    )];
    let mut seen = HashSet::new();
    while let Some((name, mut bound, path)) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let t = env.get_template(&name).map_err(|e| {
            AgentError::Config(format!(
                "{key}: {} {name:?}, which cannot be loaded from the prompts directory: {e}",
                describe_path(&path)
            ))
        })?;
        let unknown = unknown_variables(env, &t, &bound);
        if !unknown.is_empty() {
            let place = if path.is_empty() {
                "the template".to_owned()
            } else {
                format!("{} {name:?}", describe_path(&path))
            };
            return Err(AgentError::Config(format!(
                "{key}: {place} refers to {}, which the render context never has (it has {})",
                unknown.join(", "),
                RENDER_CONTEXT_NAMES
            )));
        }
        let found = statements(t.source());
        bound.extend(found.binds);
        for (child, optional) in found.templates {
            if optional && env.get_template(&child).is_err() {
                continue;
            }
            let mut p = path.clone();
            p.push(child.clone());
            queue.push((child, bound.clone(), p));
        }
    }
    Ok(())
}

/// "the included template" or "the template included by \"a\" via ...".
fn describe_path(path: &[String]) -> String {
    match path {
        [] | [_] => "the included template".to_owned(),
        [.., parent, _] => format!("the template included by {parent:?}"),
    }
}

/// What a template's statements bind and which templates they name.
#[derive(Default)]
struct Statements {
    /// Names `set`, `for` and `with` bind (plus `loop` inside a `for`).
    binds: HashSet<String>,
    /// Templates named by a literal in `include` or `extends`, and whether
    /// the statement says `ignore missing`.
    templates: Vec<(String, bool)>,
}

/// One token of a statement: a name, a string literal or another character.
#[derive(PartialEq)]
enum Token {
    Name(String),
    Str(String),
    Punct(char),
}

fn tokens(statement: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '"' || c == '\'' {
            let mut s = String::new();
            while let Some(d) = chars.next() {
                match d {
                    '\\' => s.extend(chars.next()),
                    d if d == c => break,
                    d => s.push(d),
                }
            }
            out.push(Token::Str(s));
        } else if c.is_alphanumeric() || c == '_' {
            let mut s = String::from(c);
            while let Some(&d) = chars.peek() {
                if !(d.is_alphanumeric() || d == '_') {
                    break;
                }
                s.push(d);
                chars.next();
            }
            out.push(Token::Name(s));
        } else {
            out.push(Token::Punct(c));
        }
    }
    out
}

/// Scans `source`'s `{% … %}` statements (skipping comments and raw
/// blocks, whose text is not template code).
fn statements(source: &str) -> Statements {
    let mut found = Statements::default();
    let mut rest = source;
    let mut in_raw = false;
    while let (Some(stmt), comment) = (rest.find("{%"), rest.find("{#")) {
        if let Some(c) = comment.filter(|c| *c < stmt && !in_raw) {
            match rest[c..].find("#}") {
                Some(end) => rest = &rest[c + end + 2..],
                None => break,
            }
            continue;
        }
        let Some(end) = rest[stmt..].find("%}") else {
            break;
        };
        let inner = rest[stmt + 2..stmt + end]
            .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        rest = &rest[stmt + end + 2..];
        let toks = tokens(inner);
        let keyword = match toks.first() {
            Some(Token::Name(k)) => k.as_str(),
            _ => continue,
        };
        if in_raw {
            in_raw = keyword != "endraw";
            continue;
        }
        let names_before = |stop: &str| {
            toks[1..]
                .iter()
                .take_while(|t| {
                    !matches!(t, Token::Name(n) if n == stop) && **t != Token::Punct('=')
                })
                .filter_map(|t| match t {
                    Token::Name(n) => Some(n.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        match keyword {
            "raw" => in_raw = true,
            "set" => found.binds.extend(names_before("=")),
            "for" => {
                found.binds.extend(names_before("in"));
                found.binds.insert("loop".into());
            }
            "with" => {
                for w in toks.windows(2) {
                    if let [Token::Name(n), Token::Punct('=')] = w {
                        found.binds.insert(n.clone());
                    }
                }
            }
            "include" | "extends" => {
                let optional = toks.windows(2).any(|w| {
                    matches!(w, [Token::Name(a), Token::Name(b)] if a == "ignore" && b == "missing")
                });
                // A literal name, or a list of them, before `ignore
                // missing`; anything else is an expression, left to render time.
                let names: Vec<&Token> = toks[1..]
                    .iter()
                    .take_while(|t| !matches!(t, Token::Name(n) if n == "ignore"))
                    .collect();
                let literal = names
                    .iter()
                    .all(|t| matches!(t, Token::Str(_) | Token::Punct('[' | ']' | ',')));
                if literal {
                    // Of a list, the first that exists is used.
                    let optional =
                        optional || names.iter().filter(|t| matches!(t, Token::Str(_))).count() > 1;
                    for t in names {
                        if let Token::Str(s) = t {
                            found.templates.push((s.clone(), optional));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// The compiled templates of every agent.
pub struct Prompts {
    env: Environment<'static>,
}

fn template_name(agent: &str) -> String {
    format!("agent:{agent}")
}

impl Prompts {
    /// Compiles each agent's template (inline, or its `prompt_file` read
    /// from `dir`). Errors name the agent and the template problem.
    pub fn new(agents: &[AgentConfig], dir: &Path) -> Result<Self, AgentError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Includes resolve inside the prompts directory only (the loader
        // refuses `..` and absolute paths).
        env.set_loader(minijinja::path_loader(dir));
        for (i, a) in agents.iter().enumerate() {
            let source = match (&a.prompt, &a.prompt_file) {
                (Some(text), _) => text.clone(),
                #[expect(
                    clippy::disallowed_methods,
                    reason = "an operator's template file in server.prompts_dir, read once at boot (as the template loader reads its includes)"
                )]
                (None, Some(file)) => {
                    let path = dir.join(file);
                    std::fs::read_to_string(&path).map_err(|e| {
                        AgentError::Config(format!(
                            "agents[{i}].prompt_file: cannot read {}: {e}",
                            path.display()
                        ))
                    })?
                }
                (None, None) => {
                    return Err(AgentError::Config(format!(
                        "agents[{i}]: set prompt or prompt_file"
                    )));
                }
            };
            env.add_template_owned(template_name(&a.name), source)
                .map_err(|e| {
                    AgentError::Config(format!(
                        "agents[{i}]: the prompt template does not compile: {e}"
                    ))
                })?;
            let key = if a.prompt.is_some() {
                "prompt"
            } else {
                "prompt_file"
            };
            let template = env
                .get_template(&template_name(&a.name))
                .map_err(|e| AgentError::Config(format!("agents[{i}].{key}: {e}")))?;
            check_template(&env, &template, &format!("agents[{i}].{key}"))?;
        }
        Ok(Self { env })
    }

    /// Renders an agent's system prompt. `vars` are the tenant's settings
    /// variables; they are values, never template code.
    pub fn render(
        &self,
        agent: &crate::Agent,
        scope: &TenantScope,
        vars: &BTreeMap<String, String>,
    ) -> Result<String, AgentError> {
        let template = self
            .env
            .get_template(&template_name(&agent.name))
            .map_err(|e| AgentError::Prompt(e.to_string()))?;
        let ctx = json!({
            "agent": {"name": agent.name, "description": agent.description},
            "tenant": {
                "id": scope.tenant().as_str(),
                "name": scope.name(),
                "region": scope.region().as_str(),
            },
            "vars": vars,
            "date": bulkhead_core::Timestamp::now().day(),
        });
        template.render(ctx).map_err(|e| {
            let mut msg = format!(
                "the prompt of agent {:?} could not be rendered: {e}",
                agent.name
            );
            if e.kind() == minijinja::ErrorKind::UndefinedError {
                msg.push_str(&format!(
                    " (set the variable in PUT /v1/agents/{}/settings)",
                    agent.name
                ));
            }
            AgentError::Prompt(msg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Prompts, fit, fit_tool_results, message_tokens};
    use bulkhead_core::config::AgentConfig;
    use serde_json::{Value, json};

    fn agent(prompt: &str) -> AgentConfig {
        serde_json::from_value(json!({"name": "support", "model": "small", "prompt": prompt}))
            .unwrap()
    }

    fn compile(prompt: &str) -> Result<Prompts, String> {
        Prompts::new(&[agent(prompt)], std::path::Path::new("/nonexistent"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_contract_example_prompt_compiles() {
        compile("You are the assistant of {{ tenant.name }}.").unwrap();
        compile(
            "{{ agent.name }} {{ agent.description }} {{ tenant.id }} {{ tenant.region }} \
             {{ vars.team | default('x') }} {{ vars['a b'] | default('') }} {{ date }} \
             {% for i in range(2) %}{{ loop.index }}{{ i }}{% endfor %}{% set x = 1 %}{{ x }}",
        )
        .unwrap();
    }

    #[test]
    fn a_variable_the_context_never_has_is_refused_with_its_key_path() {
        let e = compile("Hi {{ customer }} of {{ tenant.nme }}")
            .err()
            .unwrap();
        assert!(e.contains("agents[0].prompt: "), "{e}");
        assert!(e.contains("customer, tenant.nme"), "{e}");
        let e = compile("{% if false %}{{ org.name }}{% endif %}")
            .err()
            .unwrap();
        assert!(e.contains("org"), "{e}");
    }

    /// A prompts directory of its own for one test.
    #[expect(
        clippy::disallowed_methods,
        reason = "the test writes the template files Prompts::new reads"
    )]
    fn prompts_dir(files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "bulkhead-prompts-{}-{}",
            std::process::id(),
            bulkhead_core::Timestamp::now().unix_micros()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn included_templates_are_checked_for_unknown_variables_too() {
        let dir = prompts_dir(&[
            (
                "ok.j2",
                "{{ tenant.name }} {{ team }} {{ item }} {{ loop.index }} {{ w }}",
            ),
            ("bad.j2", "{% include 'deeper.j2' %}"),
            ("deeper.j2", "{% if false %}{{ customer.name }}{% endif %}"),
            (
                "raw.j2",
                "{% raw %}{% include 'nowhere.j2' %}{{ nope }}{% endraw %}{# {% include 'nor-here.j2' %} #}",
            ),
        ]);
        let compile = |prompt: &str| {
            Prompts::new(&[agent(prompt)], &dir)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        // What the including template binds is known to the included one.
        compile(
            "{% set team = 'sre' %}{% with w = 2 %}\
             {% for item in [1] %}{% include 'ok.j2' %}{% endfor %}{% endwith %}\
             {% include 'missing.j2' ignore missing %}{% include 'raw.j2' %}",
        )
        .unwrap();
        let e = compile("{% include 'ok.j2' %}").unwrap_err();
        assert!(e.contains("agents[0].prompt: the included template \"ok.j2\" refers to item, loop.index, team, w"), "{e}");
        let e = compile("Hi {% include \"bad.j2\" %}").unwrap_err();
        assert!(
            e.contains("the template included by \"bad.j2\" \"deeper.j2\" refers to customer"),
            "{e}"
        );
        let e = compile("{% include 'missing.j2' %}").unwrap_err();
        assert!(e.contains("\"missing.j2\", which cannot be loaded"), "{e}");
        // An include named by an expression is left to render time.
        compile("{% include vars.page | default('ok.j2') ignore missing %}").unwrap();
        #[expect(
            clippy::disallowed_methods,
            reason = "the test removes the directory prompts_dir made"
        )]
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn roles(m: &[Value]) -> Vec<String> {
        m.iter()
            .map(|m| {
                format!(
                    "{}:{}",
                    m["role"].as_str().unwrap_or(""),
                    m["content"].as_str().unwrap_or("-")
                )
            })
            .collect()
    }

    #[test]
    fn the_oldest_turns_leave_first_and_whole() {
        let word = |n: usize| "word ".repeat(n);
        let mut m = vec![
            json!({"role": "system", "content": word(10)}),
            json!({"role": "system", "content": "instructions"}),
            json!({"role": "user", "content": "q1"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c"}]}),
            json!({"role": "tool", "tool_call_id": "c", "content": word(200)}),
            json!({"role": "assistant", "content": "a1"}),
            json!({"role": "user", "content": "q2"}),
            json!({"role": "assistant", "content": "a2"}),
            json!({"role": "user", "content": "q3"}),
        ];
        let all = m.clone();
        assert_eq!(fit(&mut m, 100_000), 0);
        assert_eq!(m, all);
        // Turn 1 (with its tool call and result) goes as a whole.
        assert_eq!(fit(&mut m, 100), 4);
        assert_eq!(
            roles(&m),
            [
                "system:word word word word word word word word word word ",
                "system:instructions",
                "user:q2",
                "assistant:a2",
                "user:q3"
            ]
        );
        // Never the system messages or the newest turn, even over budget.
        assert_eq!(fit(&mut m, 1), 2);
        assert_eq!(roles(&m)[2..], ["user:q3".to_owned()]);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn the_newest_turns_tool_results_are_cut_to_the_budget() {
        let big = "word ".repeat(20_000);
        let mut m = vec![
            json!({"role": "system", "content": "system"}),
            json!({"role": "user", "content": "q"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "a"}, {"id": "b"}]}),
            json!({"role": "tool", "tool_call_id": "a", "content": big}),
            json!({"role": "tool", "tool_call_id": "b", "content": "small"}),
        ];
        fit(&mut m, 1_000);
        assert!(fit_tool_results(&mut m, 1_000));
        assert!(m.iter().map(message_tokens).sum::<u64>() <= 1_000);
        assert!(
            m[3]["content"]
                .as_str()
                .unwrap()
                .contains("[truncated by bulkhead:")
        );
        assert_eq!(m[4]["content"], "small");
        // The prompt alone over the budget cannot be fitted.
        let mut m = vec![json!({"role": "system", "content": big})];
        assert!(!fit_tool_results(&mut m, 1_000));
    }
}
