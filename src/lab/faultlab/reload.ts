/** Lab component 'reload' (placeholder until it lands). */
import type { Component } from './types';

export const component: Component = {
  name: 'reload',
  async run() {
    return {};
  },
};
