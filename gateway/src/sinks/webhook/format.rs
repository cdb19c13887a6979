//! What the webhook sink sends and how it reads the answer: the request body per format, the
//! DingTalk signature, and the robots' JSON replies.
//!
//! Owns the WeCom and DingTalk markdown layouts, DingTalk's 加签 signature and the
//! classification of a robot's `errcode`. It does not send (see [`super::sink`]) and does not
//! word the alert (the engine renders [`Alert::message`] with [`crate::alert::render_message`]).
//!
//! Formats (WeCom: 群机器人配置说明, "markdown类型"; DingTalk: 自定义机器人发送群消息,
//! "markdown类型"):
//! - generic: the alert JSON line as stored in the spool;
//! - WeCom: `{"msgtype":"markdown","markdown":{"content":"..."}}`, content at most 4096 bytes;
//! - DingTalk: `{"msgtype":"markdown","markdown":{"title":"...","text":"..."}}`.
//!
//! Both robots answer HTTP 200 with `{"errcode":0,"errmsg":"ok"}` on success and a non-zero
//! `errcode` on failure, so a 200 is not enough (see [`robot_verdict`]).

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;

use super::config::WebhookFormat;
use crate::alert::{Alert, AlertKind, AlertState, Language};
use crate::sinks::Verdict;
use crate::spool::truncate_utf8;

/// Longest WeCom markdown `content`, in bytes (WeCom: "markdown内容，最长不超过4096个字节").
pub const WECOM_MAX_CONTENT_BYTES: usize = 4096;
/// WeCom (and WeChat) `errcode` for "api freq out of limit": the robot's per-minute limit was
/// hit; retry later.
pub const WECOM_ERRCODE_RATE_LIMITED: i64 = 45009;
/// DingTalk `errcode` for "send too fast, exceed 20 times per minute". Taken from DingTalk's
/// error-code list as commonly quoted; not verified against a live robot.
pub const DINGTALK_ERRCODE_RATE_LIMITED: i64 = 130_101;

/// The state's word in `lang`.
const fn state_word(s: AlertState, lang: Language) -> &'static str {
    match (lang, s) {
        (Language::Zh, AlertState::Raised) => "产生",
        (Language::Zh, AlertState::Escalated) => "升级",
        (Language::Zh, AlertState::DeEscalated) => "降级",
        (Language::Zh, AlertState::Cleared) => "解除",
        (Language::Zh, AlertState::Acknowledged) => "消警",
        (Language::En, AlertState::Raised) => "raised",
        (Language::En, AlertState::Escalated) => "escalated",
        (Language::En, AlertState::DeEscalated) => "de-escalated",
        (Language::En, AlertState::Cleared) => "cleared",
        (Language::En, AlertState::Acknowledged) => "acknowledged",
    }
}

/// UTC RFC 3339 time of a nanosecond timestamp, to the second.
fn utc(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The robot title: `工地 xa 质量告警：警戒（产生）` / `Site xa quality alert: warning (raised)`.
fn title(a: &Alert, lang: Language) -> String {
    match (lang, a.kind) {
        (Language::Zh, AlertKind::Quality) => format!(
            "工地 {} 质量告警：{}（{}）",
            a.site,
            a.level.name_zh(),
            state_word(a.state, lang)
        ),
        (Language::Zh, AlertKind::DeviceFault) => {
            format!("工地 {} 设备故障（{}）", a.site, state_word(a.state, lang))
        }
        (Language::En, AlertKind::Quality) => format!(
            "Site {} quality alert: {} ({})",
            a.site,
            a.level.name_en(),
            state_word(a.state, lang)
        ),
        (Language::En, AlertKind::DeviceFault) => {
            format!(
                "Site {} device fault ({})",
                a.site,
                state_word(a.state, lang)
            )
        }
    }
}

/// The markdown lines both robots show: title, message, then site / time / id.
fn markdown_lines(a: &Alert, lang: Language) -> Vec<String> {
    let (site, time, id) = match lang {
        Language::Zh => ("站点", "时间", "编号"),
        Language::En => ("Site", "Time", "Id"),
    };
    let sep = match lang {
        Language::Zh => "：",
        Language::En => ": ",
    };
    vec![
        format!("**{}**", title(a, lang)),
        a.message.clone(),
        format!("> {site}{sep}{}", a.site),
        format!("> {time}{sep}{}", utc(a.event_at)),
        format!("> {id}{sep}{}/{}", a.id, a.seq),
    ]
}

#[derive(serde::Serialize)]
struct WecomMarkdown<'a> {
    content: &'a str,
}

#[derive(serde::Serialize)]
struct DingtalkMarkdown<'a> {
    title: &'a str,
    text: &'a str,
}

#[derive(serde::Serialize)]
struct RobotBody<T> {
    msgtype: &'static str,
    markdown: T,
}

/// The request body for `alert` (whose spool line is `line`, without its newline).
///
/// # Errors
/// Only if serde_json fails to serialise plain strings, which it does not.
pub fn render_body(
    format: WebhookFormat,
    alert: &Alert,
    line: &[u8],
    lang: Language,
) -> serde_json::Result<Vec<u8>> {
    match format {
        WebhookFormat::Generic => Ok(line.to_vec()),
        WebhookFormat::Wecom => {
            // WeCom renders single newlines as line breaks.
            let content = markdown_lines(alert, lang).join("\n");
            let content = truncate_utf8(&content, WECOM_MAX_CONTENT_BYTES);
            serde_json::to_vec(&RobotBody {
                msgtype: "markdown",
                markdown: WecomMarkdown { content },
            })
        }
        WebhookFormat::Dingtalk => {
            // DingTalk's markdown needs a blank line between paragraphs.
            let text = markdown_lines(alert, lang).join("\n\n");
            let title = title(alert, lang);
            serde_json::to_vec(&RobotBody {
                msgtype: "markdown",
                markdown: DingtalkMarkdown {
                    title: &title,
                    text: &text,
                },
            })
        }
    }
}

/// DingTalk 加签: `urlencode(base64(HMAC-SHA256(key = secret, msg = "{timestamp}\n{secret}")))`
/// with `timestamp` in milliseconds; the request URL gets `&timestamp=..&sign=..`. DingTalk
/// refuses a timestamp more than one hour off.
#[must_use]
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp_ms}\n{secret}").as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `url` with DingTalk's `timestamp` and `sign` query parameters appended.
#[must_use]
pub fn dingtalk_signed_url(url: &str, secret: &str, timestamp_ms: i64) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{sep}timestamp={timestamp_ms}&sign={}",
        dingtalk_sign(secret, timestamp_ms)
    )
}

#[derive(Deserialize)]
struct RobotReply {
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// Judge a 2xx answer. Generic receivers: any 2xx is success. Robots: `errcode` 0 is success,
/// their rate-limit codes are [`Verdict::Retry`], any other code is [`Verdict::Reject`], and a
/// body that is not a robot reply is [`Verdict::Misconfigured`] (the URL points elsewhere, e.g.
/// a proxy login page).
///
/// # Errors
/// The verdict and a description for the log or dead letter.
pub fn robot_verdict(format: WebhookFormat, body: &str) -> Result<(), (Verdict, String)> {
    if format == WebhookFormat::Generic {
        return Ok(());
    }
    let reply: RobotReply = serde_json::from_str(body).map_err(|_| {
        (
            Verdict::Misconfigured,
            format!(
                "the answer is not a robot reply: {}",
                truncate_utf8(body, 256)
            ),
        )
    })?;
    let rate_code = match format {
        WebhookFormat::Wecom => WECOM_ERRCODE_RATE_LIMITED,
        _ => DINGTALK_ERRCODE_RATE_LIMITED,
    };
    match reply.errcode {
        0 => Ok(()),
        c if c == rate_code => Err((Verdict::Retry, format!("errcode {c}: {}", reply.errmsg))),
        c => Err((Verdict::Reject, format!("errcode {c}: {}", reply.errmsg))),
    }
}
