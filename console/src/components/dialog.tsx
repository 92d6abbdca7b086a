// Modal dialogs on the native <dialog>: showModal() makes the rest of the
// page inert (focus stays inside) and Escape cancels; we return the focus
// to what opened the dialog when it goes.

import type { ComponentChild, ComponentChildren } from "preact";
import { useId, useLayoutEffect, useRef, useState } from "preact/hooks";

export function Dialog(props: { title: string; onClose(): void; children: ComponentChildren; class?: string }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const onClose = useRef(props.onClose);
  onClose.current = props.onClose;

  useLayoutEffect(() => {
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    const dialog = ref.current!;
    if (!dialog.open) dialog.showModal();
    return () => {
      if (dialog.open) dialog.close();
      restoreFocus(opener);
    };
  }, []);

  return (
    <dialog
      ref={ref}
      class={props.class}
      aria-labelledby={titleId}
      onCancel={(event) => {
        event.preventDefault();
        onClose.current();
      }}
      onKeyDown={trapTab}
    >
      <h2 id={titleId}>{props.title}</h2>
      {props.children}
    </dialog>
  );
}

// A modal dialog makes the page inert, but Tab past its last control leaves
// the document (to the browser's own controls): wrap around instead.
function trapTab(event: KeyboardEvent) {
  if (event.key !== "Tab") return;
  const dialog = event.currentTarget as HTMLDialogElement;
  const focusable = [...dialog.querySelectorAll<HTMLElement>("button, [href], input, select, textarea, [tabindex]:not([tabindex='-1'])")].filter(
    (el) => !el.hasAttribute("disabled") && el.getClientRects().length > 0,
  );
  const first = focusable[0];
  const last = focusable[focusable.length - 1];
  if (!first || !last) return;
  if (event.shiftKey && document.activeElement === first) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && document.activeElement === last) {
    event.preventDefault();
    first.focus();
  }
}

/** Back to the opener; if it is gone (a deleted row's button), to the page's
 * heading, so the keyboard is not left at the top of the document. */
function restoreFocus(opener: HTMLElement | null) {
  if (opener?.isConnected) {
    opener.focus();
  } else {
    document.querySelector<HTMLElement>("main h1")?.focus();
  }
}

export interface ConfirmOptions {
  title: string;
  body: ComponentChild;
  confirm: string;
  danger?: boolean;
}

/** `[dialog, ask]`: render `dialog`; `await ask(...)` is true when confirmed. */
export function useConfirm(): [ComponentChild, (options: ConfirmOptions) => Promise<boolean>] {
  const [asking, setAsking] = useState<{ options: ConfirmOptions; answer(yes: boolean): void } | null>(null);
  const ask = (options: ConfirmOptions) =>
    new Promise<boolean>((resolve) => {
      setAsking({
        options,
        answer(yes) {
          setAsking(null);
          resolve(yes);
        },
      });
    });
  const dialog = asking && (
    <Dialog title={asking.options.title} onClose={() => asking.answer(false)}>
      <div class="dialog-body">{asking.options.body}</div>
      <div class="actions">
        <button type="button" onClick={() => asking.answer(false)}>
          Cancel
        </button>
        <button type="button" class={asking.options.danger ? "danger" : "primary"} onClick={() => asking.answer(true)}>
          {asking.options.confirm}
        </button>
      </div>
    </Dialog>
  );
  return [dialog, ask];
}

/** A secret the server shows once: a new key, an invitation's or a service
 * account's token. */
export interface OneTimeSecret {
  title: string;
  /** What it is, for the label and the warning: "secret key". */
  what: string;
  value: string;
  note?: string;
}

/**
 * Shows a secret once, with a copy button and the warning that it cannot
 * be shown again. The page keeps it nowhere else: the owner of this dialog
 * holds it in state only while the dialog is open and drops it on close.
 */
export function SecretDialog({ secret, onClose }: { secret: OneTimeSecret; onClose(): void }) {
  const [status, setStatus] = useState("");
  const inputId = useId();
  const warningId = useId();
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret.value);
      setStatus("Copied to the clipboard.");
    } catch {
      // No clipboard access (an insecure origin, a refused permission):
      // select it so that the person can copy it themselves.
      const input = document.getElementById(inputId) as HTMLInputElement | null;
      input?.select();
      setStatus("Could not copy: it is selected, press Ctrl+C (or ⌘C) to copy it.");
    }
  };
  return (
    <Dialog title={secret.title} onClose={onClose} class="secret-dialog">
      <p class="warning" id={warningId}>
        <strong>Copy it now: it is shown only once.</strong> The server keeps only a digest of this {secret.what}; once
        you close this dialog it cannot be shown again.
      </p>
      {secret.note && <p>{secret.note}</p>}
      <label for={inputId}>{capitalize(secret.what)}</label>
      <input
        id={inputId}
        class="secret-value"
        type="text"
        readOnly
        spellcheck={false}
        autocomplete="off"
        value={secret.value}
        aria-describedby={warningId}
        onFocus={(e) => (e.currentTarget as HTMLInputElement).select()}
      />
      <div class="actions">
        <button type="button" class="primary" onClick={copy}>
          Copy
        </button>
        <button type="button" onClick={onClose}>
          Done
        </button>
      </div>
      <p class="status" role="status">
        {status}
      </p>
    </Dialog>
  );
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
