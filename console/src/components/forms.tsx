// Forms that show the API's errors where they belong: each field violation
// of INVALID_ARGUMENT under the input it names, the rest (a violation the
// form has no input for, any other status, a retry delay) at the top.

import type { ComponentChildren, InputHTMLAttributes, JSX } from "preact";
import { useEffect, useId, useMemo, useRef, useState } from "preact/hooks";
import { place, problemOf, type Problem } from "../api/errors";

export interface Form {
  id(name: string): string;
  errorOf(name: string): string[] | undefined;
  problem: Problem | null;
  busy: boolean;
  /** Runs a submit: clears the last problem, shows the next one. */
  run(action: () => Promise<void>): Promise<boolean>;
  setProblem(problem: Problem | null): void;
  /** Violations with no input on this form. */
  unplaced: string[];
}

/**
 * `inputs`: the request's field paths the form has inputs for; `prefixes`:
 * the request field wrapping the resource ("chatbot" in UpdateChatbot), so
 * "chatbot.name" lands on the input "name".
 */
export function useForm(inputs: readonly string[], prefixes: readonly string[] = []): Form {
  const base = useId();
  const [problem, setProblem] = useState<Problem | null>(null);
  const [busy, setBusy] = useState(false);
  // A second submit while one is under way is dropped (the button stays
  // enabled so that it keeps the keyboard focus).
  const running = useRef(false);
  const placed = useMemo(() => place(problem?.violations ?? [], inputs, prefixes), [problem]);
  const id = (name: string) => `${base}-${name.replace(/[^\w-]/g, "-")}`;

  // Keyboard and screen-reader users land on the first field to correct.
  useEffect(() => {
    const first = inputs.find((i) => placed.byInput.has(i));
    if (first) document.getElementById(id(first))?.focus();
  }, [placed]);

  return {
    id,
    errorOf: (name) => placed.byInput.get(name),
    problem,
    busy,
    setProblem,
    unplaced: placed.unplaced.map((v) => `${v.field}: ${v.description}`),
    async run(action) {
      if (running.current) return false;
      running.current = true;
      setBusy(true);
      setProblem(null);
      try {
        await action();
        return true;
      } catch (error) {
        setProblem(problemOf(error));
        return false;
      } finally {
        running.current = false;
        setBusy(false);
      }
    },
  };
}

/** A problem outside any form (loading a page, a list's action). */
export function ProblemNote({ problem }: { problem: Problem | null }) {
  if (!problem) return null;
  return (
    <div class="problem" role="alert">
      <strong>{problem.title}:</strong> {problem.message}
      {problem.retryAfter !== undefined && <RetryNote seconds={problem.retryAfter} />}
    </div>
  );
}

function RetryNote({ seconds }: { seconds: number }) {
  return <span class="retry"> Try again in {seconds} s.</span>;
}

/** The top of a form: what the server said that no input shows. */
export function FormProblem({ form }: { form: Form }) {
  const { problem, unplaced } = form;
  if (!problem) return null;
  const placedSome = problem.violations.length > unplaced.length;
  return (
    <div class="problem" role="alert">
      <strong>{problem.title}:</strong>{" "}
      {problem.violations.length === 0 && problem.message}
      {placedSome && "correct the fields marked below."}
      {unplaced.length > 0 && (
        <ul>
          {unplaced.map((text) => (
            <li key={text}>{text}</li>
          ))}
        </ul>
      )}
      {problem.retryAfter !== undefined && <RetryNote seconds={problem.retryAfter} />}
    </div>
  );
}

interface FieldProps {
  form: Form;
  /** The request's field path this input sets. */
  name: string;
  label: string;
  hint?: string;
  children: (props: InputA11y) => JSX.Element;
  class?: string;
}

export interface InputA11y {
  id: string;
  name: string;
  "aria-invalid"?: "true";
  "aria-describedby"?: string;
}

/** A label, the input, its hint and its violations, tied together by ids. */
export function Field({ form, name, label, hint, children, class: extra }: FieldProps) {
  const id = form.id(name);
  const errors = form.errorOf(name);
  const describedBy = [hint ? `${id}-hint` : "", errors ? `${id}-error` : ""].filter(Boolean).join(" ");
  return (
    <div class={`field${errors ? " invalid" : ""}${extra ? ` ${extra}` : ""}`} data-field={name}>
      <label for={id}>{label}</label>
      {children({
        id,
        name,
        "aria-invalid": errors ? "true" : undefined,
        "aria-describedby": describedBy || undefined,
      })}
      {hint && (
        <p class="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      {errors && (
        <p class="field-error" id={`${id}-error`}>
          {errors.join("; ")}
        </p>
      )}
    </div>
  );
}

interface InputProps {
  type?: "text" | "email" | "password" | "url" | "number" | "datetime-local";
  autocomplete?: string;
  required?: boolean;
  min?: string;
  max?: string;
  inputMode?: "numeric" | "text" | "email" | "url";
  spellcheck?: boolean;
  form: Form;
  name: string;
  label: string;
  hint?: string;
  value: string;
  onValue(value: string): void;
}

export function TextField({ form, name, label, hint, value, onValue, ...rest }: InputProps) {
  return (
    <Field form={form} name={name} label={label} hint={hint}>
      {(a11y) => (
        <input
          type="text"
          // The narrow props above are all valid on an <input>; preact's
          // type for them is a union by input type that a spread cannot match.
          {...(rest as InputHTMLAttributes<HTMLInputElement>)}
          {...a11y}
          value={value}
          onInput={(e) => onValue((e.currentTarget as HTMLInputElement).value)}
        />
      )}
    </Field>
  );
}

export interface Option {
  value: string;
  label: string;
}

export function SelectField(props: {
  form: Form;
  name: string;
  label: string;
  hint?: string;
  value: string;
  options: readonly Option[];
  onValue(value: string): void;
}) {
  const { form, name, label, hint, value, options, onValue } = props;
  return (
    <Field form={form} name={name} label={label} hint={hint}>
      {(a11y) => <Select {...a11y} value={value} options={options} onValue={onValue} />}
    </Field>
  );
}

export function Select(props: {
  id?: string;
  name?: string;
  value: string;
  options: readonly Option[];
  onValue(value: string): void;
  "aria-label"?: string;
  "aria-invalid"?: "true";
  "aria-describedby"?: string;
}) {
  const { value, options, onValue, ...rest } = props;
  return (
    <select {...rest} value={value} onChange={(e) => onValue((e.currentTarget as HTMLSelectElement).value)}>
      {options.map((o) => (
        <option key={o.value} value={o.value}>
          {o.label}
        </option>
      ))}
    </select>
  );
}

export function Checkbox(props: { label: string; checked: boolean; onChecked(checked: boolean): void; name?: string }) {
  const id = useId();
  return (
    <div class="check">
      <input
        type="checkbox"
        id={id}
        name={props.name}
        checked={props.checked}
        onChange={(e) => props.onChecked((e.currentTarget as HTMLInputElement).checked)}
      />
      <label for={id}>{props.label}</label>
    </div>
  );
}

export function Submit({ form, children }: { form: Form; children: ComponentChildren }) {
  return (
    <button type="submit" class="primary" aria-busy={form.busy ? "true" : undefined}>
      {children}
    </button>
  );
}

/** Calls `submit` without the browser's own form submission. */
export function onSubmit(submit: () => void) {
  return (event: Event) => {
    event.preventDefault();
    submit();
  };
}
