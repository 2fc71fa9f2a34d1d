import { signIn } from '../api.js';
import { errorText, fill, h } from '../dom.js';

export function renderLogin(main, done) {
  const username = h('input', { name: 'username', autocomplete: 'username', required: true, testid: 'login-username' });
  const password = h('input', {
    name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password',
  });
  const problem = h('p', { class: 'error', role: 'alert', testid: 'login-error' });
  const submit = h('button', { type: 'submit', testid: 'login-submit' }, 'Sign in');
  const form = h(
    'form',
    {
      onsubmit: async (event) => {
        event.preventDefault();
        submit.disabled = true;
        problem.textContent = '';
        try {
          await signIn(username.value, password.value);
          done();
        } catch (error) {
          problem.textContent = errorText(error);
          password.select();
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('label', {}, 'Username', username),
    h('label', {}, 'Password', password),
    submit,
    problem,
  );
  fill(main, h('section', { class: 'login' }, h('h1', {}, 'Sign in'), form));
  username.focus();
}
