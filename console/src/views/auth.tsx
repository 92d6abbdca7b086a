// Sign in (AuthService.Login) and sign up (UserService.CreateUser, then
// Login). The tokens go to the session's memory and nowhere else.

import { useState } from "preact/hooks";
import { api } from "../api/client";
import type { TokenPair } from "../api/session";
import { FormProblem, onSubmit, Submit, TextField, useForm } from "../components/forms";
import { useTitle } from "../context";

interface Props {
  onSignedIn(pair: TokenPair): Promise<void>;
}

export function SignIn({ onSignedIn, ended }: Props & { ended: string }) {
  useTitle("Sign in");
  const form = useForm(["email", "password"]);
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const submit = () =>
    form.run(async () => {
      const pair = await api.auth.login({ email, password });
      await onSignedIn(pair);
    });
  return (
    <>
      <h1 tabIndex={-1}>Sign in</h1>
      {ended && (
        <p class="problem" role="alert">
          {ended}
        </p>
      )}
      <form onSubmit={onSubmit(submit)} class="card" noValidate>
        <FormProblem form={form} />
        <TextField form={form} name="email" label="Email" type="email" autocomplete="username" required value={email} onValue={setEmail} />
        <TextField
          form={form}
          name="password"
          label="Password"
          type="password"
          autocomplete="current-password"
          required
          value={password}
          onValue={setPassword}
        />
        <div class="actions">
          <Submit form={form}>Sign in</Submit>
        </div>
      </form>
      <p>
        No account yet? <a href="#/signup">Create one</a>.
      </p>
      <p class="hint">Signing in lasts as long as this tab: reloading the page signs you out.</p>
    </>
  );
}

export function SignUp({ onSignedIn }: Props) {
  useTitle("Create an account");
  const form = useForm(["email", "password"]);
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const submit = () =>
    form.run(async () => {
      await api.users.createUser({ email, password });
      const pair = await api.auth.login({ email, password });
      await onSignedIn(pair);
    });
  return (
    <>
      <h1 tabIndex={-1}>Create an account</h1>
      <form onSubmit={onSubmit(submit)} class="card" noValidate>
        <FormProblem form={form} />
        <TextField form={form} name="email" label="Email" type="email" autocomplete="username" required value={email} onValue={setEmail} />
        <TextField
          form={form}
          name="password"
          label="Password"
          hint="8 to 128 characters."
          type="password"
          autocomplete="new-password"
          required
          value={password}
          onValue={setPassword}
        />
        <div class="actions">
          <Submit form={form}>Create account</Submit>
        </div>
      </form>
      <p>
        Already have an account? <a href="#/signin">Sign in</a>.
      </p>
    </>
  );
}
