//! The manage page `/m/{id}#{owner_token}.{secret}`: the uploader's private view of one file,
//! to see its downloads, change its expiry and download limit, or delete it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use leptos::prelude::*;

use crate::{api, download::GONE, util};

#[derive(Clone, Debug, PartialEq)]
enum Page {
    Loading,
    Failed(String),
    Ready {
        name: String,
        state: String,
        expires_at: i64,
        limit: Option<u64>,
        count: u64,
        size: u64,
    },
    Deleted,
}

/// The manage page for file `id`.
#[component]
pub(crate) fn ManagePage(id: String) -> impl IntoView {
    let fragment = util::fragment();
    util::forget_fragment();
    let (owner, secret) = fragment
        .split_once('.')
        .map(|(o, s)| (o.to_owned(), s.to_owned()))
        .unwrap_or_default();
    let page = RwSignal::new(Page::Loading);
    let notice = RwSignal::new(None::<String>);
    let expiry = RwSignal::new(None::<u64>);
    let limit = RwSignal::new(String::from("unlimited"));
    let id = StoredValue::new(id);
    let owner = StoredValue::new(owner);

    let show = move |info: api::ManageInfo| {
        let name = match (crypto_wasm::Secret::from_base64url(&secret), &info.kdf) {
            (Ok(secret), None) => crypto_wasm::FileKeys::derive(&secret, None)
                .ok()
                .and_then(|keys| {
                    keys.open_metadata(&URL_SAFE_NO_PAD.decode(&info.metadata).ok()?)
                        .ok()
                })
                .map(|m| m.name)
                .unwrap_or_else(|| "(name could not be decrypted)".into()),
            (_, Some(_)) => "(password-protected file)".into(),
            (Err(_), None) => "(name unavailable: the link's key is damaged)".into(),
        };
        limit.set(
            info.download_limit
                .map(|l| l.to_string())
                .unwrap_or_else(|| "unlimited".into()),
        );
        page.set(Page::Ready {
            name,
            state: info.state,
            expires_at: info.expires_at,
            limit: info.download_limit,
            count: info.download_count,
            size: info.size,
        });
    };
    let show = StoredValue::new(show);

    leptos::task::spawn_local(async move {
        if owner.get_value().is_empty() {
            return page.set(Page::Failed(
                "This manage link is incomplete. Use the full link you got after uploading.".into(),
            ));
        }
        match api::manage_info(&id.get_value(), &owner.get_value()).await {
            Ok(info) => show.get_value()(info),
            Err(e) if e.status == 404 => page.set(Page::Failed(GONE.into())),
            Err(e) => page.set(Page::Failed(e.message)),
        }
    });

    let save = move |_| {
        let download_limit = match parse_limit(&limit.get_untracked()) {
            Ok(l) => l,
            Err(message) => return notice.set(Some(message.into())),
        };
        let expires_in = expiry.get_untracked();
        leptos::task::spawn_local(async move {
            match api::update(
                &id.get_value(),
                &owner.get_value(),
                expires_in,
                download_limit,
            )
            .await
            {
                Ok(info) => {
                    show.get_value()(info);
                    notice.set(Some("Saved.".into()));
                }
                Err(e) => notice.set(Some(e.message)),
            }
        });
    };
    let delete = move |_| {
        leptos::task::spawn_local(async move {
            match api::delete(&id.get_value(), &owner.get_value()).await {
                Ok(()) => page.set(Page::Deleted),
                Err(e) => notice.set(Some(e.message)),
            }
        });
    };

    view! {
        <section class="card">
            {move || match page.get() {
                Page::Loading => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Page::Failed(message) => view! { <p class="error" role="alert">{message}</p> }.into_any(),
                Page::Deleted => view! { <p class="done" id="deleted">"The file was deleted. Its link no longer works."</p> }
                    .into_any(),
                Page::Ready { name, state, expires_at, limit: current_limit, count, size } => view! {
                    <h1 class="file-name">{name}</h1>
                    <p class="file-facts">
                        {format!(
                            "{} encrypted · {} · downloaded {count} time(s){} · expires {}",
                            util::format_bytes(size as f64),
                            state,
                            current_limit.map(|l| format!(" of {l}")).unwrap_or_default(),
                            util::format_time(expires_at),
                        )}
                    </p>
                    <div class="options">
                        <label>
                            "Expiry "
                            <select id="manage-expiry" on:change=move |ev| expiry.set(event_target_value(&ev).parse().ok())>
                                <option value="keep" selected>"Keep the current expiry"</option>
                                <option value="3600">"1 hour from now"</option>
                                <option value="86400">"1 day from now"</option>
                                <option value="604800">"7 days from now"</option>
                                <option value="2592000">"30 days from now"</option>
                            </select>
                        </label>
                        <label>
                            "Download limit "
                            <input
                                id="manage-limit"
                                type="text"
                                inputmode="numeric"
                                prop:value=move || limit.get()
                                on:input=move |ev| limit.set(event_target_value(&ev))
                            />
                            <span class="muted">" (a number, or “unlimited”)"</span>
                        </label>
                    </div>
                    <button id="save" class="primary" on:click=save>"Save"</button>
                    <button id="delete" class="danger" on:click=delete>"Delete now"</button>
                }
                    .into_any(),
            }}
            {move || notice.get().map(|n| view! { <p class="notice" role="status">{n}</p> })}
        </section>
    }
}

/// Reads the download-limit field: a whole number of at least 1, or "unlimited" (or nothing).
fn parse_limit(text: &str) -> Result<Option<u64>, &'static str> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    match text.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err("The download limit must be a whole number of at least 1, or “unlimited”."),
    }
}
