/** Lab component 'corrupt' (placeholder until it lands). */
import type { Component } from './types';

export const component: Component = {
  name: 'corrupt',
  async run() {
    return {};
  },
};
